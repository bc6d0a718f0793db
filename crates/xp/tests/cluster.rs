//! Real `xp` processes on loopback: formation, replication, failover, full restart, SIGTERM.
//! Ports 21000-21099 belong to this file.

use std::time::{Duration, Instant};

use xp_testkit::{kv_get, kv_put, wait_for, Cluster};

const T: Duration = Duration::from_secs(20);

#[test]
fn formation_replication_failover_and_full_restart() {
    let mut c = Cluster::new(21000, 3, 3);
    let start = Instant::now();
    for i in 1..=3 {
        c.node(i).start();
    }
    let leader = c.wait_leader(&[1, 2, 3], T);
    eprintln!("measured: 3-node formation to an agreed leader in {:?}", start.elapsed());

    let infos: Vec<_> = (1..=3).map(|i| c.node(i).info().unwrap()).collect();
    let cluster_id = wait_for("a cluster id on every node", T, || {
        let ids: Vec<String> = (1..=3)
            .map(|i| c.nodes[i - 1].info().map(|v| v["cluster_id"].as_str().unwrap().to_owned()))
            .collect::<Result<_, _>>()?;
        if !ids[0].is_empty() && ids.iter().all(|i| i == &ids[0]) {
            Ok(ids[0].clone())
        } else {
            Err(format!("{ids:?}"))
        }
    });
    for v in &infos {
        assert_eq!(v["voters"], serde_json::json!([1, 2, 3]));
        assert_eq!(v["leader_api_base_url"], c.nodes[leader - 1].url().as_str());
    }

    // A write on the leader is applied on every node and readable through each of them.
    let index = kv_put(&c.nodes[leader - 1].url(), "alpha", "1").unwrap();
    for i in 1..=3 {
        let node = &c.nodes[i - 1];
        wait_for("the write to be applied", T, || {
            let v = node.info()?;
            if v["last_applied_index"].as_u64().unwrap() >= index {
                Ok(())
            } else {
                Err(v.to_string())
            }
        });
        assert_eq!(
            kv_get(&node.url(), "alpha").unwrap().as_deref(),
            Some("1"),
            "read via {}",
            node.name
        );
    }

    // SIGKILL the leader: the other two elect a new one and keep the data.
    let others: Vec<usize> = (1..=3).filter(|i| *i != leader).collect();
    let killed = Instant::now();
    c.node(leader).kill();
    let new_leader = c.wait_leader(&others, T);
    eprintln!("measured: leader SIGKILL to a new agreed leader in {:?}", killed.elapsed());
    assert_ne!(new_leader, leader);
    assert_eq!(kv_get(&c.nodes[new_leader - 1].url(), "alpha").unwrap().as_deref(), Some("1"));
    kv_put(&c.nodes[new_leader - 1].url(), "beta", "2").unwrap();

    // The old leader comes back as a follower of the new one.
    c.node(leader).start();
    c.wait_leader(&[1, 2, 3], T);
    let back = c.nodes[leader - 1].info().unwrap();
    assert_ne!(back["role"], "leader");

    // Full restart: same data, same membership, same cluster id.
    for i in 1..=3 {
        let (_, code) = c.node(i).terminate();
        assert_eq!(code, Some(0), "{} exit code after SIGTERM", c.nodes[i - 1].name);
    }
    for i in 1..=3 {
        c.node(i).start();
    }
    let leader = c.wait_leader(&[1, 2, 3], T);
    let v = c.nodes[leader - 1].info().unwrap();
    assert_eq!(v["voters"], serde_json::json!([1, 2, 3]));
    assert_eq!(v["cluster_id"], cluster_id.as_str());
    assert_eq!(kv_get(&c.nodes[leader - 1].url(), "alpha").unwrap().as_deref(), Some("1"));
    assert_eq!(kv_get(&c.nodes[leader - 1].url(), "beta").unwrap().as_deref(), Some("2"));
}

#[test]
fn sigterm_exits_promptly_with_code_zero() {
    let mut c = Cluster::new(21050, 1, 1);
    c.node(1).start();
    c.wait_leader(&[1], T);
    let (took, code) = c.node(1).terminate();
    eprintln!("measured: SIGTERM to exit in {took:?}");
    assert_eq!(code, Some(0));
    // Generous bound: this catches a hang, not a slow machine (the figure above is the measure).
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn data_dir_is_locked_while_running_and_wrong_env_is_refused() {
    let mut c = Cluster::new(21060, 2, 1);
    c.node(1).start();
    c.wait_leader(&[1], T);
    // A second process on the same data dir is refused.
    let out = c.nodes[0].xp(&["run"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is locked: an xp node (or another xp-ops command) is using this data dir; stop it first"), "{err}");
    // `xp wipe` on a running node is refused too.
    let out = c.nodes[0].xp(&["wipe", "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    c.node(1).terminate();

    // node2's env file pointed at node1's data dir: the identity check refuses.
    let env2 = std::fs::read_to_string(&c.nodes[1].env_file).unwrap();
    let wrong = env2
        .replace(c.nodes[1].data_dir.to_str().unwrap(), c.nodes[0].data_dir.to_str().unwrap())
        + "XP_NODE_ID=2\n";
    std::fs::write(&c.nodes[1].env_file, wrong).unwrap();
    let out = c.nodes[1].xp(&["run"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("belongs to node \"node1\" (id 1) but"), "{err}");
    assert!(err.contains("says XP_NODE_NAME=\"node2\": wrong env file or wrong data dir"), "{err}");

    // A node with no state and no XP_NODE_ID says how to get one.
    std::fs::write(&c.nodes[1].env_file, env2).unwrap();
    let out = c.nodes[1].xp(&["run"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "run `xp init` to start a new cluster or `xp join --token-file FILE` to join one"
        ),
        "{err}"
    );

    // A malformed env file exits 2 naming the key.
    std::fs::write(&c.nodes[1].env_file, "XP_DATA_DIR=/tmp\nXP_TYPO=1\n").unwrap();
    let out = c.nodes[1].xp(&["run"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(":2: unknown key XP_TYPO"));
}

#[test]
fn init_makes_a_single_node_cluster_and_refuses_twice() {
    let mut c = Cluster::new(21080, 1, 0);
    // No XP_NODE_ID, no bootstrap members: `xp run` says what to do.
    let out = c.nodes[0].xp(&["run"]);
    assert_eq!(out.status.code(), Some(1));
    let out = c.nodes[0].xp(&["init"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("initialized a new single-node cluster: this node is node 1"));
    let out = c.nodes[0].xp(&["init"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds Raft state"));
    c.node(1).start();
    let v = wait_for("the initialized node to lead", T, || {
        let v = c.nodes[0].info()?;
        if v["role"] == "leader" && v["cluster_id"] != "" {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    });
    assert_eq!(v["voters"], serde_json::json!([1]));
    kv_put(&c.nodes[0].url(), "k", "v").unwrap();
}

/// `state_machine.json` is not rewritten per write: after a SIGKILL it lags, and the node
/// rebuilds its state from the log on start (up to `committed.json`), even with no leader to
/// tell it what is committed. A clean stop writes it out.
#[test]
fn a_killed_node_rebuilds_its_state_machine_from_the_log() {
    let mut c = Cluster::new(21090, 3, 3);
    let leader = c.boot(3, T);
    let lurl = c.nodes[leader - 1].url();
    let mut index = 0;
    for k in 0..40 {
        index = kv_put(&lurl, &format!("key{k}"), &format!("value{k}")).unwrap();
    }
    // Wait for a follower to apply everything, then kill all three.
    let f = (1..=3).find(|i| *i != leader).unwrap();
    wait_for("the follower to apply every write", T, || {
        let v = c.nodes[f - 1].info()?;
        (v["last_applied_index"].as_u64().unwrap() >= index).then_some(()).ok_or(v.to_string())
    });
    for i in 1..=3 {
        c.node(i).kill();
    }
    let dir = xp_store::RaftDir::new(c.nodes[f - 1].data_dir.join("raft"));
    let on_disk = dir.read_state_machine().unwrap().unwrap().last_applied.unwrap().index;
    assert!(on_disk < index, "state_machine.json is at {on_disk}, the writes went to {index}");

    // Alone, the follower cannot elect a leader: what it has, it rebuilt from its own log.
    c.node(f).start();
    let v = wait_for("the follower to replay its log", T, || {
        let v = c.nodes[f - 1].info()?;
        (v["last_applied_index"].as_u64().unwrap() >= index)
            .then_some(v.clone())
            .ok_or(v.to_string())
    });
    assert_ne!(v["role"], "leader", "{v}");

    for i in (1..=3).filter(|i| *i != f) {
        c.node(i).start();
    }
    c.wait_leader(&[1, 2, 3], T);
    for k in [0, 17, 39] {
        let got = kv_get(&c.nodes[f - 1].url(), &format!("key{k}")).unwrap();
        assert_eq!(got.as_deref(), Some(format!("value{k}").as_str()));
    }

    // A clean stop leaves the file current.
    let applied = c.nodes[f - 1].info().unwrap()["last_applied_index"].as_u64().unwrap();
    let (_, code) = c.node(f).terminate();
    assert_eq!(code, Some(0));
    let on_disk = dir.read_state_machine().unwrap().unwrap().last_applied.unwrap().index;
    assert!(on_disk >= applied, "state_machine.json at {on_disk} after SIGTERM, applied {applied}");
}
