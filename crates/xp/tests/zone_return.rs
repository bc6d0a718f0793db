//! A lost zone that comes back after its cluster was recovered without it: it must not run a
//! second cluster. Real `xp` processes on loopback. Ports 28000-28099 belong to this file.

use std::time::{Duration, Instant};

use serde_json::Value;
use xp_testkit::{join_token, kv_get, kv_put, wait_for, Cluster};

const T: Duration = Duration::from_secs(20);

fn recover(node: &xp_testkit::Node) {
    let o = node.xp_ops(&["xp", "recover-single-node", "-y"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("recovery generation 1"));
}

/// Waits until `node` reports `health = "fenced"`; returns its info.
fn wait_fenced(node: &xp_testkit::Node) -> Value {
    wait_for(&format!("{} to fence itself", node.name), T, || {
        let v = node.info()?;
        if v["health"] == "fenced" {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    })
}

/// A KV write straight to `url` (no redirect): status and body.
fn put_raw(url: &str, key: &str) -> (u16, String) {
    let body = serde_json::json!({ "value": "stale" }).to_string();
    let (s, _, text) =
        xp_testkit::http("PUT", &format!("{url}/api/kv/{key}"), Some(&body), &[]).unwrap();
    (s, text)
}

/// Nodes 1 and 2 (a zone) go dark, node 3 is recovered as the only voter. Returns node 3's
/// term as the recovered leader.
fn lose_zone_and_recover(c: &mut Cluster) -> u64 {
    let leader = c.boot(3, T);
    for k in 0..20 {
        kv_put(&c.nodes[leader - 1].url(), &format!("before{k}"), "1").unwrap();
    }
    wait_for("every node applied the writes", T, || {
        let applied: Vec<u64> = (0..3)
            .map(|i| c.nodes[i].info().map(|v| v["last_applied_index"].as_u64().unwrap()))
            .collect::<Result<_, _>>()?;
        if applied.iter().all(|a| *a == applied[0]) {
            Ok(())
        } else {
            Err(format!("{applied:?}"))
        }
    });
    for i in 1..=3 {
        c.node(i).terminate();
    }
    recover(&c.nodes[2]);
    c.node(3).start();
    c.wait_leader(&[3], T);
    let v = c.nodes[2].info().unwrap();
    assert_eq!(v["voters"], serde_json::json!([3]));
    assert_eq!(v["recovery_generation"], 1);
    assert_ne!(v["recovered_at"], "");
    v["term"].as_u64().unwrap()
}

#[test]
fn a_returning_zone_is_fenced_before_it_takes_part() {
    let mut c = Cluster::new(28000, 4, 3);
    let term = lose_zone_and_recover(&mut c);
    let n3 = c.nodes[2].url();

    // The zone comes back with its disks. Before the fix node1 (the old leader) was leader at
    // its old term within a second, with node2 following it.
    let started = Instant::now();
    c.node(1).start();
    c.node(2).start();
    for i in [1, 2] {
        let v = wait_fenced(&c.nodes[i - 1]);
        eprintln!("measured: node{i} start to fenced in {:?}", started.elapsed());
        assert!(v["fenced"].as_str().unwrap().contains("recovered at generation 1"), "{v}");
        assert_eq!(v["role"], "fenced");
        assert_eq!(v["leader_id"], Value::Null);
        assert!(c.nodes[i - 1].log().contains("asked the members"), "the probe ran");
    }
    // Nothing is acknowledged by them, and they say how to get out.
    for i in [1, 2] {
        let (s, text) = put_raw(&c.nodes[i - 1].url(), "stale-write");
        assert_eq!(s, 503, "{text}");
        assert!(text.contains("xp wipe --yes") && text.contains("xp join --token"), "{text}");
    }
    assert_eq!(kv_get(&n3, "stale-write").unwrap(), None);
    // The recovered leader keeps its role and term.
    let v = c.nodes[2].info().unwrap();
    assert_eq!((v["role"].as_str(), v["term"].as_u64()), (Some("leader"), Some(term)), "{v}");

    // A restart does not undo the fence; the tool refuses to recover such a disk.
    c.node(1).terminate();
    let o = c.nodes[0].xp_ops(&["xp", "recover-single-node", "--dry-run"]);
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(String::from_utf8_lossy(&o.stderr).contains("evicted"));
    c.node(3).terminate(); // it cannot be asked again: the fence is on disk
    c.node(1).start();
    wait_fenced(&c.nodes[0]);
    c.node(3).start();
    c.wait_leader(&[3], T);

    // The way out: wipe and rejoin with a token; everything converges.
    for i in [1, 2] {
        c.node(i).terminate();
        let o = c.nodes[i - 1].xp(&["wipe", "--yes"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let (token, _) = join_token(&n3, 300).unwrap();
        let o = c.nodes[i - 1].xp_join(&token);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        c.node(i).start();
    }
    let leader = c.wait_leader(&[1, 2, 3], T);
    assert_eq!(leader, 3);
    for i in [1, 2] {
        let v = wait_for("a rejoined node to be a healthy voter", T, || {
            let v = c.nodes[i - 1].info()?;
            let voter = v["voters"].as_array().is_some_and(|a| a.contains(&v["node_id"]));
            if v["health"] == "healthy" && voter {
                Ok(v)
            } else {
                Err(v.to_string())
            }
        });
        assert_eq!(v["recovery_generation"], 1, "the lineage replicates to joiners: {v}");
        assert_eq!(kv_get(&c.nodes[i - 1].url(), "before7").unwrap().as_deref(), Some("1"));
    }
}

#[test]
fn a_stale_leader_is_evicted_on_contact_and_relays_it() {
    let mut c = Cluster::new(28050, 3, 3);
    let term = lose_zone_and_recover(&mut c);
    // The survivor is out of reach when the zone returns (here: stopped), so the probe finds
    // nobody to ask and the zone elects a leader of its own: the window no software closes.
    c.node(3).terminate();
    let t0 = Instant::now();
    c.node(1).start();
    c.node(2).start();
    let stale = c.wait_leader(&[1, 2], T);
    eprintln!("measured: the probe did not block start: stale leader after {:?}", t0.elapsed());
    let acked = (0..5).filter(|k| kv_put(&c.nodes[stale - 1].url(), &format!("s{k}"), "x").is_ok());
    assert_eq!(acked.count(), 5, "the stale side commits while the survivor is away");

    // The survivor comes back (a heal): the stale leader's first RPC to it gets the eviction,
    // and the other stale node learns it from the first one it asks.
    let healed = Instant::now();
    c.node(3).start();
    for i in [1, 2] {
        wait_fenced(&c.nodes[i - 1]);
        eprintln!("measured: node{i} fenced {:?} after the survivor came back", healed.elapsed());
        let (s, _) = put_raw(&c.nodes[i - 1].url(), "after-heal");
        assert_eq!(s, 503);
    }
    let v = c.nodes[2].info().unwrap();
    assert_eq!(v["role"], "leader");
    assert!(v["term"].as_u64().unwrap() >= term);
    assert_eq!(v["voters"], serde_json::json!([3]));
    assert_eq!(kv_get(&c.nodes[2].url(), "s0").unwrap(), None, "stale writes are not in it");
}

#[test]
fn a_restored_cluster_is_not_fenced_by_the_old_one() {
    let mut c = Cluster::new(28080, 3, 3);
    let leader = c.boot(3, T);
    for k in 0..10 {
        kv_put(&c.nodes[leader - 1].url(), &format!("k{k}"), "v").unwrap();
    }
    let file = c.dir.path().join("backup.json");
    let o = c.nodes[leader - 1].xp_ops(&["cluster", "backup", "--out", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // A follower's host is reused for the restore (same id, same URL) while the old cluster,
    // still a majority, keeps replicating to that URL with the old disk's incarnation.
    let f = (1..=3).find(|i| *i != leader).unwrap();
    c.node(f).terminate();
    assert!(c.nodes[f - 1].xp(&["wipe", "--yes"]).status.success());
    let o = c.nodes[f - 1].xp_ops(&["xp", "restore", "-y", "--file", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    c.node(f).start();
    c.wait_leader(&[f], T);
    // The old leader did reach it (the refusal is logged once)...
    wait_for("the old cluster to contact the restored node", T, || {
        let log = c.nodes[f - 1].log();
        log.contains("refusing Raft RPCs from a node of another cluster").then_some(()).ok_or(log)
    });
    // ...and it stays a healthy leader of its own cluster, not fenced by the old one.
    let v = c.nodes[f - 1].info().unwrap();
    assert_eq!(
        (v["role"].as_str(), v["health"].as_str()),
        (Some("leader"), Some("healthy")),
        "{v}"
    );
    assert_eq!(v["recovery_generation"], 1, "a restore starts a generation too: {v}");
    assert_eq!(kv_get(&c.nodes[f - 1].url(), "k9").unwrap().as_deref(), Some("v"));
}
