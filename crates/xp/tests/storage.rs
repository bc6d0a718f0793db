//! What a node does when its storage fails under it. Ports 28200-28299 belong to this file.

use std::time::Duration;

use xp_testkit::{kv_get, kv_put, wait_for, Cluster};

const T: Duration = Duration::from_secs(20);

/// A follower's disk fills up (simulated: its log appends fail after a few). Before the fix
/// openraft stopped, the node kept answering `role: "shutdown"` with `health: "healthy"`, its
/// healthcheck passed and the process never exited.
#[test]
fn a_storage_error_stops_the_node_with_a_non_zero_exit_and_nothing_is_lost() {
    let mut c = Cluster::new(28200, 3, 3);
    let leader = c.boot(3, T);
    let lurl = c.nodes[leader - 1].url();
    let f = (1..=3).find(|i| *i != leader).unwrap();
    c.node(f).terminate();
    // Its first append fails (a count above 0 would depend on how the leader batches).
    c.node(f).start_with_env(&[(xp_store::log::FAULT_ENV, "0")]);
    for k in 0..20 {
        kv_put(&lurl, &format!("k{k}"), "v").unwrap();
    }
    let code = c.node(f).wait_exit(T);
    assert_eq!(code, Some(1), "a failed node exits non-zero so a supervisor restarts it");
    let log = c.nodes[f - 1].log();
    assert!(log.contains("Raft stopped on an error"), "{log}");
    assert!(log.contains("No space left on device"), "{log}");
    // The others go on.
    let index = kv_put(&lurl, "after", "v").unwrap();
    // Space is freed: it restarts and catches up with everything acknowledged.
    c.node(f).start();
    let node = &c.nodes[f - 1];
    wait_for("the restarted node to catch up and be healthy", T, || {
        let v = node.info()?;
        let caught_up = v["last_applied_index"].as_u64() >= Some(index);
        (caught_up && v["health"] == "healthy").then_some(()).ok_or(v.to_string())
    });
    // Read through the leader and stop it: the follower's copy must hold every write too.
    c.node(leader).terminate();
    let others: Vec<usize> = (1..=3).filter(|i| *i != leader).collect();
    let new_leader = c.wait_leader(&others, T);
    for k in (0..20).map(|k| format!("k{k}")).chain(["after".into()]) {
        let v = kv_get(&c.nodes[new_leader - 1].url(), &k).unwrap();
        assert_eq!(v.as_deref(), Some("v"), "{k}");
    }
}
