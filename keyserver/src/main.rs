//! Placeholder binary: the keyserver is not implemented yet. It exits with status 2 so that
//! no script can mistake it for a working component.

fn main() {
    eprintln!("spike-keyserver: not implemented yet");
    std::process::exit(2);
}
