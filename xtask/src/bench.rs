//! `cargo xtask bench <what>`: benchmarks that report numbers (no timed assertions in tests).
//!
//! - `recover [ENTRIES...]`: single-node recovery on data dirs with large logs.
//! - `ops [KEYS]`: add-node catch-up, leadership transfer, backup and restore with KEYS keys.

use anyhow::{bail, Context, Result};

pub fn run(what: &str, args: &[String]) -> Result<u8> {
    let (package, example) = match what {
        "recover" => ("xp-recovery", "bench-recover"),
        "ops" => ("xp", "bench-ops"),
        other => bail!("unknown benchmark {other:?}; available: recover, ops"),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(crate::root())
        .args(["run", "--quiet", "-p", package, "--example", example, "--"])
        .args(args)
        .status()
        .context("running cargo")?;
    Ok(if status.success() { 0 } else { 1 })
}
