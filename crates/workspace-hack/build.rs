//! Empty build script: it makes cargo build the host-side dependencies pinned in Cargo.toml.
fn main() {}
