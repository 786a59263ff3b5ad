//! Placeholder binary: the controlplane is not implemented yet. It exits with status 2 so that
//! no script can mistake it for a working component.

fn main() {
    eprintln!("spike-controlplane: not implemented yet");
    std::process::exit(2);
}
