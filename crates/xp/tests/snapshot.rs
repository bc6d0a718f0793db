//! Snapshots under real state: a follower that catches up by installing a snapshot can restart,
//! be inspected and be recovered. Ports 28100-28199 belong to this file.

use std::time::Duration;

use xp_testkit::{kv_get, kv_put, wait_for, Cluster};

const T: Duration = Duration::from_secs(20);

/// A cluster that snapshots every 5 entries (and keeps no more than 5 behind).
fn snapshotting_cluster(base: u16) -> Cluster {
    let c = Cluster::new(base, 3, 3);
    for n in &c.nodes {
        let mut env = std::fs::read_to_string(&n.env_file).unwrap();
        env.push_str("XP_RAFT_SNAPSHOT_LOGS=5\n");
        std::fs::write(&n.env_file, env).unwrap();
    }
    c
}

fn wait_applied(node: &xp_testkit::Node, index: u64) {
    wait_for(&format!("{} to apply index {index}", node.name), T, || {
        let v = node.info()?;
        (v["last_applied_index"].as_u64() >= Some(index)).then_some(()).ok_or(v.to_string())
    });
}

#[test]
fn a_follower_that_installed_a_snapshot_restarts_and_can_be_recovered() {
    let mut c = snapshotting_cluster(28100);
    let leader = c.boot(3, T);
    let f = (1..=3).find(|i| *i != leader).unwrap();
    let lurl = c.nodes[leader - 1].url();
    c.node(f).terminate();
    for k in 0..40 {
        kv_put(&lurl, &format!("k{k}"), "v").unwrap();
    }
    // It comes back 40 entries behind: the leader has purged them, so it sends a snapshot.
    c.node(f).start();
    let index = kv_put(&lurl, "k40", "v").unwrap();
    wait_applied(&c.nodes[f - 1], index);
    for k in 41..45 {
        kv_put(&lurl, &format!("k{k}"), "v").unwrap();
    }
    let index = kv_put(&lurl, "k45", "v").unwrap();
    wait_applied(&c.nodes[f - 1], index);
    // Before the fix: "corrupt Raft state: bad record at byte ...: entry 55 follows entry 15".
    c.node(f).terminate();
    c.node(f).start();
    wait_applied(&c.nodes[f - 1], index);
    assert_eq!(kv_get(&c.nodes[f - 1].url(), "k45").unwrap().as_deref(), Some("v"));

    // It can be the survivor of a quorum loss.
    for i in 1..=3 {
        c.node(i).terminate();
    }
    let o = c.nodes[f - 1].xp_ops(&["xp", "inspect", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = c.nodes[f - 1].xp_ops(&["xp", "recover-single-node", "-y"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    c.node(f).start();
    c.wait_leader(&[f], T);
    for k in [0, 20, 45] {
        assert_eq!(kv_get(&c.nodes[f - 1].url(), &format!("k{k}")).unwrap().as_deref(), Some("v"));
    }
    kv_put(&c.nodes[f - 1].url(), "after", "v").unwrap();
}
