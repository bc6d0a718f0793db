//! The step engine on the local backend: real xp processes on loopback, inside `cargo test`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use scenario::backend::local::kill_processes_under;
use scenario::backend::{Backend, BackendError, LocalBackend};
use scenario::engine::RunOptions;
use scenario::parse::parse;
use scenario::profile::Profile;
use scenario::report::{Outcome, Report, StepStatus};
use scenario::run::run_one;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn bins() -> BTreeMap<String, PathBuf> {
    ["xp", "xp-ops"].iter().map(|b| (b.to_string(), xp_testkit::bin(b))).collect()
}

/// Runs scenario text on a fresh local xp cluster and tears it down; checks nothing is left.
async fn run(src: &str) -> Report {
    run_on("xp-3", src).await
}

/// The same on the cluster of profile `cluster`.
async fn run_on(cluster: &str, src: &str) -> Report {
    let profile = Profile::load(&Profile::path_for(&root(), cluster)).unwrap();
    let scenario = parse(Path::new("t.toml"), src, &profile).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let backend = LocalBackend::new(profile.clone(), bins(), run_dir.clone()).unwrap();
    let options = RunOptions { seed: 7, verbose: false };
    let ended = run_one(scenario, profile, backend, options, false).await;
    assert_eq!(ended.teardown, Ok(()));
    assert!(!run_dir.exists(), "teardown removes the run dir");
    assert_eq!(kill_processes_under(&run_dir), 0, "teardown leaves no process");
    ended.report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_loss_passes_on_the_local_backend() {
    let src = std::fs::read_to_string(root().join("scenarios/quorum-loss.toml")).unwrap();
    let report = run(&src).await;
    let failed: Vec<_> = report.steps.iter().filter(|s| s.status != StepStatus::Passed).collect();
    assert_eq!(report.outcome, Outcome::Passed, "{failed:?}");
    assert_eq!(report.steps.len(), 24);
    // The survivor was chosen by inspecting the stopped nodes, then recovered.
    let choose = report.steps.iter().find(|s| s.action == "choose-survivor").unwrap();
    assert!(
        choose.detail.contains("not a candidate (error: missing Raft state"),
        "{}",
        choose.detail
    );
    let recover = report.steps.iter().find(|s| s.action == "recover").unwrap();
    assert!(recover.detail.contains("recover-single-node -y exited 0"), "{}", recover.detail);
    // Evidence: nothing acknowledged was lost, and the recovery time was measured.
    let v = report.verification.as_ref().unwrap();
    assert!(v.acknowledged >= 200 && v.lost == 0, "{v:?}");
    let rec = report.recoveries.iter().find(|r| r.action == "recover").unwrap();
    assert!(rec.leader_after_ms.is_some() && rec.write_after_ms.is_some(), "{rec:?}");
    assert!(report.timeline.iter().any(|s| s.role == "leader"));
    let html = scenario::report::html::render(&report);
    assert!(
        html.contains("<svg") && html.contains("13 recover"),
        "the timeline marks the recovery"
    );
}

/// Whether etcd 3.4 is installed (`scripts/setup-etcd.sh`); CI installs it, so there its
/// absence fails the test instead of skipping it.
fn etcd_installed() -> bool {
    let found = Path::new("/usr/bin/etcd").exists() && Path::new("/usr/bin/etcdctl").exists();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "etcd is not installed: run `bash scripts/setup-etcd.sh`"
        );
        eprintln!("SKIPPED: etcd is not installed (bash scripts/setup-etcd.sh installs it)");
    }
    found
}

/// Seed 003's runbook on etcd members run as local processes: the same scenario file as on
/// docker, with every container path and URL of the profile mapped to the run's directories
/// and loopback ports, and the members read through a command source (etcdctl).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_quorum_loss_passes_on_the_local_backend() {
    if !etcd_installed() {
        return;
    }
    // The runner's own environment must not reach a member or a one-off beside it: etcd
    // refuses a flag that an `ETCD_*` variable also sets ("conflicting environment variable"),
    // and the recovery runs `etcd --data-dir ...`. Only etcd reads this variable, and only this
    // test starts etcd.
    std::env::set_var("ETCD_DATA_DIR", "/set-in-the-runner-shell");
    let src = std::fs::read_to_string(root().join("scenarios/etcd-quorum-loss.toml")).unwrap();
    let report = run_on("etcd-3", &src).await;
    let failed: Vec<_> = report.steps.iter().filter(|s| s.status != StepStatus::Passed).collect();
    assert_eq!(report.outcome, Outcome::Passed, "{failed:?}");
    let recover = report.steps.iter().find(|s| s.action == "recover").unwrap();
    assert!(recover.detail.contains("exited 0"), "{}", recover.detail);
    // The step line shows the command as it ran: ports filled, the data dir mapped.
    for unfilled in ["{port}", "{peer_port}", "/var/lib/etcd"] {
        assert!(!recover.detail.contains(unfilled), "{unfilled} in {}", recover.detail);
    }
    // Three voters at the end: read from `etcdctl member list -w json` on each member.
    let last_expect = report.steps.iter().rev().find(|s| s.action == "expect").unwrap();
    assert!(last_expect.detail.contains("voters"), "{}", last_expect.detail);
    let v = report.verification.as_ref().unwrap();
    assert!(v.acknowledged >= 200 && v.lost == 0, "{v:?}");
}

/// A one-off that runs out of time goes with everything it started: etcd's recovery is a
/// shell that starts `etcd` in the background, which must not outlive a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_off_that_times_out_leaves_no_process_behind() {
    if !etcd_installed() {
        return;
    }
    let profile = Profile::load(&Profile::path_for(&root(), "etcd-3")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let mut backend = LocalBackend::new(profile, bins(), run_dir.clone()).unwrap();
    let cmd: Vec<String> =
        ["busybox", "sh", "-c", "busybox sleep 301 & busybox sleep 302"].map(String::from).to_vec();
    let started = std::time::Instant::now();
    let out = backend.oneoff("node1", &cmd, std::time::Duration::from_millis(500)).await;
    assert!(matches!(out, Err(BackendError::Timeout { .. })), "{out:?}");
    assert!(started.elapsed().as_secs() < 5, "the timeout bounds the wait");
    // Every process of the run names its bin/ on PATH: none is left.
    assert_eq!(kill_processes_under(&run_dir), 0, "the background child outlived the timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_makes_the_same_choices() {
    let src = "name = \"t\"\nsummary = \"s\"\n[[step]]\nup = {}\n\
               [[step]]\nexpect = { nodes = \"all\", that = { leader_id = { same = true }, role = { one_of = [\"leader\", \"follower\"] } } }\n\
               [[step]]\nexpect = { nodes = \"any-follower\", that = { role = \"follower\" }, capture = { f = \"node_name\" } }\n\
               [[step]]\nexpect = { nodes = \"any-follower\", that = { role = \"follower\" }, capture = { g = \"node_name\" } }\n";
    let picks = |r: &Report| r.steps[2..].iter().map(|s| s.nodes.clone()).collect::<Vec<_>>();
    let a = run(src).await;
    let b = run(src).await;
    assert_eq!(a.outcome, Outcome::Passed);
    assert_eq!(picks(&a), picks(&b), "seed 7 picks the same followers every time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_expectation_says_what_each_node_last_answered() {
    let src = "name = \"t\"\nsummary = \"s\"\n[[step]]\nup = {}\n\
               [[step]]\nexpect = { nodes = \"all\", timeout = \"1s\", that = { role = \"leader\" } }\n\
               [[step]]\nsleep = { duration = \"1ms\" }\n";
    let report = run(src).await;
    assert_eq!(report.outcome, Outcome::Failed);
    assert_eq!(report.steps.len(), 2, "the run stops at the first failure");
    let d = &report.steps[1].detail;
    assert!(d.starts_with("not met within 1s: "), "{d}");
    assert!(d.contains("expected = \"leader\""), "{d}");
    assert!(d.contains("last answers:\n  node1 [Running]: role="), "{d}");
    assert_eq!(report.evidence.len(), 3);
    assert!(report.evidence.iter().all(|e| e.info["node_name"] == e.node.as_str()));
    assert!(report.evidence.iter().all(|e| e.log_tail.contains("xp node started")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_the_backend_cannot_do_skips_the_scenario_loudly() {
    let src = std::fs::read_to_string(root().join("scenarios/isolate-leader.toml")).unwrap();
    let report = run(&src).await;
    assert_eq!(report.outcome, Outcome::Skipped);
    assert!(report.steps.is_empty(), "nothing ran");
    assert_eq!(
        report.reason.as_deref(),
        Some("step `isolate`: the local backend has no network to cut a node off (use --backend docker)")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wipe_of_a_running_node_is_refused_by_the_engine() {
    let src = "name = \"t\"\nsummary = \"s\"\n[[step]]\nup = {}\n[[step]]\nwipe = { nodes = \"node2\" }\n";
    let report = run(src).await;
    assert_eq!(report.outcome, Outcome::Failed);
    assert_eq!(
        report.steps[1].detail,
        "wipe needs node2 stopped, but it is Running; add a `stop` step before it"
    );
}

/// `verify` catches lost writes: acknowledged writes on a cluster that is then replaced by a
/// fresh, empty one are all reported lost, by key, and the scenario fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_acknowledged_writes_that_are_gone() {
    let src = "name = \"t\"\nsummary = \"s\"\n[[step]]\nup = {}\n\
               [[step]]\nexpect = { nodes = \"all\", that = { leader_id = { same = true }, role = { one_of = [\"leader\", \"follower\"] } } }\n\
               [[step]]\nworkload-start = { rate = 200 }\n\
               [[step]]\nsleep = { duration = \"1s\" }\n\
               [[step]]\nworkload-stop = {}\n\
               [[step]]\ndown = {}\n\
               [[step]]\nup = {}\n\
               [[step]]\nexpect = { nodes = \"all\", that = { leader_id = { same = true }, role = { one_of = [\"leader\", \"follower\"] } } }\n\
               [[step]]\nverify = {}\n";
    let report = run(src).await;
    assert_eq!(report.outcome, Outcome::Failed);
    let v = report.verification.as_ref().unwrap();
    // Enough writes to mean something; how many a second brings depends on the machine's
    // load (45 were seen in CI with other test binaries running), so no rate is asserted.
    assert!(v.acknowledged >= 10, "{v:?}");
    assert_eq!(v.lost, v.acknowledged, "{v:?}");
    assert_eq!(v.present, 0, "{v:?}");
    let step = report.steps.last().unwrap();
    assert_eq!((step.action.as_str(), &step.status), ("verify", &StepStatus::Failed));
    assert!(step.detail.contains("lost keys include w"), "{}", step.detail);
}

/// A short seeded campaign, generated, run and judged as `cargo xtask chaos` does, on the
/// faults the local backend can do (every one but the network's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_campaign_passes_every_checker_on_the_local_backend() {
    use scenario::chaos::generate::Schedule;
    use scenario::chaos::{check, Fault, Spec};
    use std::time::Duration;
    let profile = Profile::load(&Profile::path_for(&root(), "xp-3")).unwrap();
    let faults = vec![
        Fault::Kill,
        Fault::Stop,
        Fault::Restart,
        Fault::Pause,
        Fault::WipeRejoin,
        Fault::QuorumLoss,
    ];
    let spec =
        Spec::new(&profile, Duration::from_secs(25), Duration::from_secs(2), 11, faults, 12.0)
            .unwrap();
    let schedule = Schedule::generate(&spec);
    assert!(schedule.episodes.len() >= 3, "{:?}", schedule.episodes);
    let (text, marks) = schedule.render();
    let report = run(&text).await;
    let checks = check::run(&report, &schedule, &marks);
    let failed: Vec<_> = checks.iter().filter(|c| !c.passed).collect();
    if !failed.is_empty() {
        // Keep the evidence (steps, every node's log) where a developer can read it.
        let dir = root().join("target/local-campaign-report");
        report.write(&dir).unwrap();
        std::fs::write(dir.join("repro.toml"), &text).unwrap();
        panic!("{failed:#?}\nreport and logs in {}", dir.display());
    }
    assert_eq!(report.outcome, Outcome::Passed, "{:?}", report.reason);
    // The evidence is real: writes acknowledged, registers read, logs scanned.
    let regs = report.register_check.as_ref().unwrap();
    assert!(regs.reads_checked >= 20 && regs.writes_acked >= 10, "{regs:?}");
    assert!(report.verification.as_ref().unwrap().acknowledged >= 50);
    assert_eq!(report.node_logs.len(), 3);
    assert!(check::pace(&report, &marks).faults_per_min > 0.0);
}
