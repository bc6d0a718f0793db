//! One run, from a fresh cluster to its teardown, whatever ends it: the last step, a failure,
//! a panic in a step, Ctrl-C or SIGTERM. The command line and the tests use the same function,
//! so none of them re-implements the teardown.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use futures_util::FutureExt;

use crate::backend::{Backend, Teardown};
use crate::engine::{Engine, RunOptions};
use crate::model::Scenario;
use crate::profile::Profile;
use crate::report::Report;

/// How a run ended.
pub struct Ended {
    pub report: Report,
    /// Ctrl-C or SIGTERM stopped it (the report says which).
    pub interrupted: bool,
    /// `Err` when the cluster is still there: kept (`--keep`), or a teardown that failed.
    pub teardown: Result<(), String>,
}

/// Runs one scenario on a backend, with teardown on success, failure, panic, Ctrl-C and
/// SIGTERM (unless `keep`, and then only when the run was not interrupted).
pub async fn run_one<B: Backend>(
    scenario: Scenario,
    profile: Profile,
    backend: B,
    options: RunOptions,
    keep: bool,
) -> Ended {
    let seed = options.seed;
    let mut report =
        Report::new(&scenario.name, &scenario.file, &scenario.summary, backend.name(), seed);
    let teardown: Teardown = backend.teardown();
    let hint = backend.keep_hint();
    let started = Instant::now();
    let mut engine = Engine::new(scenario, profile, backend, options);
    // Without a SIGTERM handler (none could be installed) the run still ends on Ctrl-C.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let sigterm = async {
        match term.as_mut() {
            Some(t) => t.recv().await,
            None => std::future::pending().await,
        }
    };
    // A panic in a step is caught here so that the teardown below still runs.
    let interrupted = {
        let run = AssertUnwindSafe(engine.run(&mut report)).catch_unwind();
        tokio::select! {
            r = run => {
                if let Err(p) = r {
                    let msg = p.downcast_ref::<String>().cloned().or(p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
                    report.fail(format!("the runner panicked: {msg}"));
                }
                None
            }
            _ = tokio::signal::ctrl_c() => Some("Ctrl-C"),
            _ = sigterm => Some("SIGTERM"),
        }
    };
    if let Some(what) = interrupted {
        println!("\ninterrupted by {what}: tearing the cluster down");
        report.fail(format!("interrupted by {what}"));
    }
    let interrupted = interrupted.is_some();
    report.duration_ms = started.elapsed().as_millis() as u64;
    let torn = if keep && !interrupted {
        println!("{hint}");
        Err("kept running (--keep)".to_owned())
    } else {
        let t = Instant::now();
        match teardown.run().await {
            Ok(()) => {
                println!("cluster torn down in {:.1}s", t.elapsed().as_secs_f64());
                Ok(())
            }
            Err(e) => {
                eprintln!("warning: teardown incomplete ({e}); run `cargo xtask clean`");
                Err(e.to_string())
            }
        }
    };
    Ended { report, interrupted, teardown: torn }
}
