//! Join tokens and the join flow against real `xp` processes. Ports 22000-22099.

use std::time::Duration;

use serde_json::json;
use xp_testkit::{
    join_token, join_token_replacing, kv_get, kv_put, send_json, wait_for, Cluster, ADMIN_TOKEN,
};

const T: Duration = Duration::from_secs(20);

fn voters(c: &Cluster, i: usize) -> serde_json::Value {
    c.nodes[i - 1].info().unwrap()["voters"].clone()
}

/// Waits until the leader has recorded the disk incarnation of each of the 3 members.
fn wait_incarnations_recorded(c: &Cluster, leader: usize) {
    wait_for("the leader to record every member's incarnation", T, || {
        let v = c.nodes[leader - 1].info()?;
        let m = v["members"].as_array().unwrap();
        (m.len() == 3 && m.iter().all(|m| m["incarnation"] != ""))
            .then_some(())
            .ok_or(v.to_string())
    });
}

#[test]
fn token_refusals_change_nothing_and_a_new_node_joins() {
    let mut c = Cluster::new(22000, 5, 3);
    let leader = c.boot(3, T);
    let lurl = c.nodes[leader - 1].url();
    kv_put(&lurl, "before-join", "x").unwrap();
    let tokens_url = format!("{lurl}/api/admin/cluster/join-tokens");

    // Admin token: missing, wrong.
    let (s, v) = send_json("POST", &tokens_url, &json!({"ttl_seconds": 60}), &[]).unwrap();
    assert_eq!((s, v["error"].as_str().unwrap()), (401, "missing admin bearer token"));
    let (s, _) = send_json(
        "POST",
        &tokens_url,
        &json!({}),
        &[("Authorization", "Bearer nope-nope-nope-nope")],
    )
    .unwrap();
    assert_eq!(s, 403);
    // TTL out of bounds.
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (s, v) =
        send_json("POST", &tokens_url, &json!({"ttl_seconds": 0}), &[("Authorization", &auth)])
            .unwrap();
    assert_eq!(s, 400, "{v}");
    // On a follower: 421 naming the leader.
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let (s, v) = send_json(
        "POST",
        &format!("{}/api/admin/cluster/join-tokens", c.nodes[follower - 1].url()),
        &json!({"ttl_seconds": 60}),
        &[("Authorization", &auth)],
    )
    .unwrap();
    assert_eq!(s, 421, "{v}");
    assert_eq!(v["leader_api_base_url"], lurl.as_str());

    // A forged token: `xp join` refuses locally, the leader refuses too; nothing changes.
    let (good, _) = join_token(&lurl, 60).unwrap();
    // Same claims, signed by someone who does not hold the cluster secret.
    let claims = xp::token::decode_unverified(&good).unwrap();
    let forged = xp::token::sign(&claims, &xp_config::Secret::new("not-the-cluster-secret"));
    let out = c.nodes[3].xp_join(&forged);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("join token signature is invalid"));
    assert!(!c.nodes[3].data_dir.join("join.json").exists());
    let node4_url = c.nodes[3].url();
    let req =
        |token: &str| json!({"token": token, "node_name": "node4", "api_base_url": node4_url});
    let (s, v) =
        send_json("POST", &format!("{lurl}/api/cluster/join"), &req(&forged), &[]).unwrap();
    assert_eq!(s, 401, "{v}");
    assert_eq!(voters(&c, leader), json!([1, 2, 3]));

    // An expired token.
    let (short, _) = join_token(&lurl, 1).unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    let (s, v) = send_json("POST", &format!("{lurl}/api/cluster/join"), &req(&short), &[]).unwrap();
    assert_eq!(s, 401);
    assert!(v["error"].as_str().unwrap().starts_with("join token expired"), "{v}");
    let out = c.nodes[3].xp_join(&short);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(voters(&c, leader), json!([1, 2, 3]));

    // A valid token: node4 joins and becomes a voter following the leader.
    let out = c.nodes[3].xp_join(&good);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Twice: refused, nothing changes.
    let out = c.nodes[3].xp_join(&good);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("a join is already pending"));
    c.node(4).start();
    let new_id = wait_for("node4 to be a voter", T, || {
        let v = c.nodes[3].info()?;
        let id = v["node_id"].as_u64().unwrap();
        if v["voters"].as_array().unwrap().iter().any(|x| x == id)
            && v["leader_api_base_url"] == lurl.as_str()
        {
            Ok(id)
        } else {
            Err(v.to_string())
        }
    });
    assert!(new_id > 3, "node ids are never reused: got {new_id}");
    let pending = c.nodes[3].data_dir.join("join.json");
    wait_for("the joiner to clear its pending join", T, || {
        if pending.exists() {
            Err("join.json still there".into())
        } else {
            Ok(())
        }
    });
    assert_eq!(kv_get(&c.nodes[3].url(), "before-join").unwrap().as_deref(), Some("x"));

    // Replaying the used token is refused and changes nothing.
    let (s, v) = send_json("POST", &format!("{lurl}/api/cluster/join"), &req(&good), &[]).unwrap();
    assert_eq!(s, 409, "{v}");
    // `xp join` on a node that belongs to a cluster is refused.
    c.node(4).terminate();
    let out = c.nodes[3].xp_join(&good);
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("this node already belongs to a cluster as node"));
    c.node(4).start();

    // A follower's disk is replaced: wipe it, join with a token naming the old id; the new id
    // takes its place.
    let victim = (1..=3).find(|i| *i != leader).unwrap();
    let victim_id = c.nodes[victim - 1].info().unwrap()["node_id"].as_u64().unwrap();
    c.node(victim).terminate();
    let out = c.nodes[victim - 1].xp(&["wipe", "--yes"]);
    assert!(out.status.success());
    let (tok, _) = join_token_replacing(&lurl, 60, Some(victim_id)).unwrap();
    assert!(c.nodes[victim - 1].xp_join(&tok).status.success());
    c.node(victim).start();
    wait_for("the replacement to take the old member's place", T, || {
        let v = c.nodes[leader - 1].info()?;
        let vs: Vec<u64> =
            v["voters"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
        if !vs.contains(&victim_id) && vs.len() == 4 {
            Ok(())
        } else {
            Err(v.to_string())
        }
    });
    assert_eq!(kv_get(&c.nodes[victim - 1].url(), "before-join").unwrap().as_deref(), Some("x"));
}

/// A member whose disk is wiped and that restarts under its old id (XP_NODE_ID still in its env
/// file) has lost its log and its vote: letting it vote or count towards a quorum again could
/// lose committed writes. The cluster fences it by its data-dir incarnation; the node says why,
/// and the right way back (wipe, join with a token) still works.
#[test]
fn a_wiped_member_restarted_under_its_old_id_is_fenced() {
    let mut c = Cluster::new(22060, 3, 3);
    let leader = c.boot(3, T);
    let lurl = c.nodes[leader - 1].url();
    kv_put(&lurl, "before", "1").unwrap();
    wait_incarnations_recorded(&c, leader);
    let victim = (1..=3).find(|i| *i != leader).unwrap();
    c.node(victim).kill();
    std::fs::remove_dir_all(&c.nodes[victim - 1].data_dir).unwrap();
    c.node(victim).start();

    let v = wait_for("the wiped node to learn it is fenced", T, || {
        let v = c.nodes[victim - 1].info()?;
        if v["health"] == "fenced" {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    });
    assert!(v["fenced"].as_str().unwrap().contains("this disk was wiped or replaced"), "{v}");
    assert_eq!(v["last_applied_index"], 0, "it was given nothing: {v}");
    assert_ne!(v["role"], "leader");
    // The other two carry on, with the fenced id still a voter (the operator decides).
    kv_put(&lurl, "during", "2").unwrap();
    assert_eq!(voters(&c, leader).as_array().unwrap().len(), 3);
    assert!(c.nodes[victim - 1].log().contains("fenced: the cluster knows node"));

    // The right way back: wipe, join with a token naming the old id; a new id takes its place.
    c.node(victim).terminate();
    assert!(c.nodes[victim - 1].xp(&["wipe", "--yes"]).status.success());
    let (tok, _) = join_token_replacing(&lurl, 60, Some(victim as u64)).unwrap();
    assert!(c.nodes[victim - 1].xp_join(&tok).status.success());
    c.node(victim).start();
    let v = wait_for("the replacement to follow as a voter", T, || {
        let v = c.nodes[victim - 1].info()?;
        let id = v["node_id"].as_u64().unwrap();
        if v["voters"].as_array().unwrap().iter().any(|x| x == id) && v["health"] != "fenced" {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    });
    assert!(v["node_id"].as_u64().unwrap() > 3, "{v}");
    assert_eq!(kv_get(&c.nodes[victim - 1].url(), "during").unwrap().as_deref(), Some("2"));
}

/// The bootstrap node (XP_BOOTSTRAP_MEMBERS in its env file) wiped and restarted must not found a
/// second cluster under the same ids: it sees its peers already belong to one, does not
/// bootstrap, and is fenced like any wiped member.
#[test]
fn a_wiped_bootstrap_node_does_not_found_a_second_cluster() {
    let mut c = Cluster::new(22080, 3, 3);
    let leader = c.boot(3, T);
    let cluster_id = c.nodes[leader - 1].info().unwrap()["cluster_id"].as_str().unwrap().to_owned();
    kv_put(&c.nodes[leader - 1].url(), "k", "v").unwrap();
    wait_incarnations_recorded(&c, leader);
    c.node(1).kill();
    std::fs::remove_dir_all(&c.nodes[0].data_dir).unwrap();
    c.node(1).start();
    let v = wait_for("the wiped bootstrap node to be fenced", T, || {
        let v = c.nodes[0].info()?;
        (v["health"] == "fenced").then_some(v.clone()).ok_or(v.to_string())
    });
    assert!(c.nodes[0].log().contains("not bootstrapping although XP_BOOTSTRAP_MEMBERS is set"));
    assert_ne!(v["role"], "leader", "{v}");
    // The cluster carries on under its own id, with one leader among the other two.
    let leader = c.wait_leader(&[2, 3], T);
    let v = c.nodes[leader - 1].info().unwrap();
    assert_eq!(v["cluster_id"], cluster_id.as_str());
    assert_eq!(kv_get(&c.nodes[leader - 1].url(), "k").unwrap().as_deref(), Some("v"));
}

/// Wipes node `i`, rejoins it through `via` (the leader) in the place of its old id, and
/// waits until it follows as a voter under its new id, which it returns.
fn rejoin(c: &mut Cluster, i: usize, via: &str) -> u64 {
    let old = c.nodes[i - 1].info().unwrap()["node_id"].as_u64().unwrap();
    c.node(i).terminate();
    assert!(c.nodes[i - 1].xp(&["wipe", "--yes"]).status.success());
    let (tok, _) = join_token_replacing(via, 60, Some(old)).unwrap();
    assert!(c.nodes[i - 1].xp_join(&tok).status.success());
    c.node(i).start();
    let v = wait_for(&format!("node{i} to follow as a voter under a new id"), T, || {
        let v = c.nodes[i - 1].info()?;
        let id = v["node_id"].as_u64().unwrap_or(0);
        let voter = v["voters"].as_array().unwrap().iter().any(|x| x == id);
        (id != old && voter && v["health"] != "fenced").then_some(v.clone()).ok_or(v.to_string())
    });
    v["node_id"].as_u64().unwrap()
}

/// A new node replays the log from its start, whose first membership does not name a leader
/// that joined later. The joiner must not refuse that leader on the strength of the old
/// membership it is still applying: found by `cargo xtask chaos --seed 11`, where the nodes
/// that joined the survivor of a quorum loss (itself a rejoined node) stayed learners for good,
/// refusing every append with 403 "node 4 is not a member".
#[test]
fn a_joiner_catches_up_from_a_leader_its_early_log_does_not_name() {
    let mut c = Cluster::new(22020, 3, 3);
    let leader = c.boot(3, T);
    let lurl = c.nodes[leader - 1].url();
    // More entries than one append carries (64), so the joiner's first batch ends before the
    // membership that names node 4.
    for i in 0..100 {
        kv_put(&lurl, &format!("k{i}"), "x").unwrap();
    }
    kv_put(&lurl, "before", "1").unwrap();
    wait_incarnations_recorded(&c, leader);
    // A follower's disk is replaced: it comes back as node 4, and leadership moves to it.
    let first = (1..=3).find(|i| *i != leader).unwrap();
    let id = rejoin(&mut c, first, &lurl);
    assert_eq!(id, 4);
    let (s, v) = send_json(
        "POST",
        &format!("{lurl}/api/admin/cluster/leader-transfer"),
        &json!({ "target": id }),
        &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
    )
    .unwrap();
    assert_eq!(s, 200, "{v}");
    assert_eq!(c.wait_leader(&[1, 2, 3], T), first);
    // Another disk is replaced; the new node joins through node 4, which its log's first
    // membership (1, 2, 3) does not name.
    let second = (1..=3).find(|i| *i != first).unwrap();
    let l4 = c.nodes[first - 1].url();
    let id = rejoin(&mut c, second, &l4);
    assert_eq!(id, 5);
    assert_eq!(kv_get(&c.nodes[second - 1].url(), "before").unwrap().as_deref(), Some("1"));
}

/// Two nodes join at the same moment: both promotions must stand. The later one used to
/// compute its new voter set before retrying behind the first, then install that stale set,
/// dropping the first node from the voters (seen by `cargo xtask chaos`: a quorum loss
/// rejoined two nodes at once, the leader's voters became {4, 7} while node 8 believed it
/// was one, and the cluster lost its quorum as soon as node 7 stopped).
#[test]
fn two_nodes_joining_at_once_both_stay_voters() {
    for round in 0..3 {
        let mut c = Cluster::new(22040, 5, 3);
        let leader = c.boot(3, T);
        let lurl = c.nodes[leader - 1].url();
        kv_put(&lurl, "before", "1").unwrap();
        let (t4, _) = join_token(&lurl, 60).unwrap();
        let (t5, _) = join_token(&lurl, 60).unwrap();
        assert!(c.nodes[3].xp_join(&t4).status.success());
        assert!(c.nodes[4].xp_join(&t5).status.success());
        c.node(4).start();
        c.node(5).start();
        wait_for("both joins to finish", T, || {
            let done = [4, 5].iter().all(|i| c.nodes[i - 1].log().contains("joined the cluster"));
            done.then_some(()).ok_or_else(|| "not yet".to_owned())
        });
        let v = wait_for("five voters on every node", T, || {
            let all: Vec<serde_json::Value> = (1..=5).map(|i| voters(&c, i)).collect();
            let five = all.iter().all(|v| v.as_array().is_some_and(|a| a.len() == 5));
            five.then(|| all[0].clone()).ok_or(format!("{all:?}"))
        });
        assert_eq!(v, json!([1, 2, 3, 4, 5]), "round {round}");
    }
}
