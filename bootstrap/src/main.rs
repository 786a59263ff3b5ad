//! Placeholder binary: the bootstrap is not implemented yet. It exits with status 2 so that
//! no script can mistake it for a working component.

fn main() {
    eprintln!("spike-bootstrap: not implemented yet");
    std::process::exit(2);
}
