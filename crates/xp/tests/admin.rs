//! Leadership transfer, node addition and removal against real `xp` processes. Ports 25000-25199.

use std::time::Duration;

use serde_json::json;
use xp_testkit::{kv_get, kv_put, send_json, wait_for, Cluster, ADMIN_TOKEN};

const T: Duration = Duration::from_secs(20);

fn admin(url: &str, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    send_json(
        "POST",
        &format!("{url}{path}"),
        &body,
        &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
    )
    .unwrap()
}

#[test]
fn leadership_moves_to_the_named_node_and_no_acknowledged_write_is_lost() {
    let mut c = Cluster::new(25000, 3, 3);
    for i in 1..=3 {
        c.node(i).start();
    }
    let leader = c.wait_leader(&[1, 2, 3], T);
    let lurl = c.nodes[leader - 1].url();
    kv_put(&lurl, "before", "1").unwrap();
    let target = (1..=3).find(|i| *i != leader).unwrap();
    let target_id = c.nodes[target - 1].info().unwrap()["node_id"].clone();

    // Refusals first: no token, a follower, a non-voter target.
    let (s, _) =
        send_json("POST", &format!("{lurl}/api/admin/cluster/leader-transfer"), &json!({}), &[])
            .unwrap();
    assert_eq!(s, 401);
    let (s, v) = admin(&c.nodes[target - 1].url(), "/api/admin/cluster/leader-transfer", json!({}));
    assert_eq!(s, 421, "{v}");
    let (s, v) = admin(&lurl, "/api/admin/cluster/leader-transfer", json!({ "target": 99 }));
    assert_eq!(
        (s, v["error"].as_str().unwrap()),
        (400, "node 99 is not a voter; voters: [1, 2, 3]")
    );

    let (s, v) = admin(&lurl, "/api/admin/cluster/leader-transfer", json!({ "target": target_id }));
    assert_eq!(s, 200, "{v}");
    eprintln!("measured: leadership transfer took {} ms", v["took_ms"]);
    let now = c.wait_leader(&[1, 2, 3], T);
    assert_eq!(now, target);
    assert_eq!(kv_get(&c.nodes[now - 1].url(), "before").unwrap().as_deref(), Some("1"));
    kv_put(&c.nodes[now - 1].url(), "after", "2").unwrap();

    // Without a target: the most up-to-date other voter.
    let (s, v) = admin(&c.nodes[now - 1].url(), "/api/admin/cluster/leader-transfer", json!({}));
    assert_eq!(s, 200, "{v}");
    let again = c.wait_leader(&[1, 2, 3], T);
    assert_ne!(again, now);
}

#[test]
fn removal_needs_the_right_confirmation_and_refuses_repeats() {
    let mut c = Cluster::new(25050, 3, 3);
    for i in 1..=3 {
        c.node(i).start();
    }
    let leader = c.wait_leader(&[1, 2, 3], T);
    let lurl = c.nodes[leader - 1].url();
    let victim = (1..=3).find(|i| *i != leader).unwrap();
    let vid = c.nodes[victim - 1].info().unwrap()["node_id"].as_u64().unwrap();

    let (s, v) = admin(
        &lurl,
        "/api/admin/cluster/remove-node",
        json!({ "node_id": vid, "confirm_voters_after": 3 }),
    );
    assert_eq!(s, 409, "{v}");
    assert_eq!(
        v["error"],
        format!("removing node {vid} leaves 2 voter(s), not 3; nothing changed")
    );
    assert_eq!(c.nodes[leader - 1].info().unwrap()["voters"].as_array().unwrap().len(), 3);

    let (s, v) = admin(
        &lurl,
        "/api/admin/cluster/remove-node",
        json!({ "node_id": vid, "confirm_voters_after": 2 }),
    );
    assert_eq!(s, 200, "{v}");
    for i in (1..=3).filter(|i| *i != victim) {
        let n = &c.nodes[i - 1];
        wait_for("the removed node to be gone from every remaining view", T, || {
            let v = n.info()?;
            let gone = v["members"].as_array().unwrap().iter().all(|m| m["node_id"] != vid);
            if gone {
                Ok(())
            } else {
                Err(v.to_string())
            }
        });
    }
    kv_put(&lurl, "still-serving", "yes").unwrap();

    let (s, v) = admin(
        &lurl,
        "/api/admin/cluster/remove-node",
        json!({ "node_id": vid, "confirm_voters_after": 2 }),
    );
    assert_eq!(
        (s, v["error"].as_str().unwrap()),
        (404, format!("node {vid} is not a member (already removed?)").as_str())
    );

    // The leader removes itself: it hands leadership over first.
    let lid = c.nodes[leader - 1].info().unwrap()["node_id"].as_u64().unwrap();
    let (s, v) = admin(
        &lurl,
        "/api/admin/cluster/remove-node",
        json!({ "node_id": lid, "confirm_voters_after": 1 }),
    );
    assert_eq!(s, 200, "{v}");
    let new_leader = v["new_leader"].as_u64().unwrap();
    assert_ne!(new_leader, lid);
    assert_eq!(v["voters"], json!([new_leader]));

    // The last voter cannot be removed.
    let last = (1..=3).find(|i| *i != leader && *i != victim).unwrap();
    let (s, v) = admin(
        &c.nodes[last - 1].url(),
        "/api/admin/cluster/remove-node",
        json!({ "node_id": new_leader, "confirm_voters_after": 0 }),
    );
    assert_eq!(
        (s, v["error"].as_str().unwrap()),
        (409, format!("refusing to remove node {new_leader}: it is the last voter").as_str())
    );
}

#[test]
fn add_node_adds_a_running_empty_node_and_refuses_reused_ids() {
    let mut c = Cluster::new(25100, 5, 3);
    for i in [4, 5] {
        let env = c.nodes[i - 1].env_file.clone();
        std::fs::write(&env, std::fs::read_to_string(&env).unwrap() + &format!("XP_NODE_ID={i}\n"))
            .unwrap();
    }
    for i in 1..=4 {
        c.node(i).start();
    }
    let leader = c.wait_leader(&[1, 2, 3], T);
    let lurl = c.nodes[leader - 1].url();
    kv_put(&lurl, "k", "v").unwrap();
    let body = |id: u64, url: String| json!({ "node_id": id, "name": format!("node{id}"), "api_base_url": url });

    let (s, _) = send_json(
        "POST",
        &format!("{lurl}/api/admin/cluster/add-node"),
        &body(4, c.nodes[3].url()),
        &[],
    )
    .unwrap();
    assert_eq!(s, 401);
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let (s, v) = admin(
        &c.nodes[follower - 1].url(),
        "/api/admin/cluster/add-node",
        body(4, c.nodes[3].url()),
    );
    assert_eq!(s, 421, "a follower names the leader: {v}");
    let (s, v) = admin(
        &lurl,
        "/api/admin/cluster/add-node",
        json!({ "node_id": 4, "name": "", "api_base_url": "ftp://x" }),
    );
    assert_eq!(s, 400, "{v}");
    // The largest id used to panic inside the state machine on every node, on every start.
    for id in [0, u64::MAX, (1 << 53)] {
        let (s, v) = admin(&lurl, "/api/admin/cluster/add-node", body(id, c.nodes[3].url()));
        assert_eq!(s, 400, "{id}: {v}");
        assert!(v["error"].as_str().unwrap().starts_with("node_id must be between 1 and"), "{v}");
    }
    for i in 1..=3 {
        c.nodes[i - 1].info().expect("every node still answers");
    }
    let (s, v) = admin(&lurl, "/api/admin/cluster/add-node", body(2, c.nodes[1].url()));
    assert_eq!(
        (s, v["error"].as_str().unwrap()),
        (409, "node 2 is already a voter; nothing changed")
    );
    let (s, v) = admin(&lurl, "/api/admin/cluster/add-node", body(4, c.nodes[3].url()));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["voters"], json!([1, 2, 3, 4]));
    assert_eq!(kv_get(&c.nodes[3].url(), "k").unwrap().as_deref(), Some("v"));

    // An id at or below one already handed out is refused, and nothing changes.
    c.node(5).start();
    let (_, handed_out) = xp_testkit::join_token(&lurl, 60).unwrap();
    let (s, v) = admin(&lurl, "/api/admin/cluster/add-node", body(handed_out, c.nodes[4].url()));
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with(&format!("node id {handed_out} was already handed out")),
        "{v}"
    );
    assert_eq!(c.nodes[leader - 1].info().unwrap()["voters"], json!([1, 2, 3, 4]));
}

/// A "node" that answers every request with 503: it never replicates anything.
fn refusing_node(port: u16) -> std::thread::JoinHandle<()> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    listener.set_nonblocking(false).unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
            let mut buf = [0u8; 65536];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    })
}

/// Before the fix openraft's blocking `add_learner` counted anything within 5 000 entries as
/// caught up: a node answering only 503 was promoted in milliseconds, leaving a cluster whose
/// quorum now needed a node that holds nothing.
#[test]
fn a_node_that_never_catches_up_is_not_promoted_and_is_removed_again() {
    let mut c = Cluster::new(25150, 3, 3);
    let leader = c.boot(3, T);
    let lurl = c.nodes[leader - 1].url();
    kv_put(&lurl, "k", "v").unwrap();
    let _fake = refusing_node(25160);
    let (s, v) = admin(
        &lurl,
        "/api/admin/cluster/add-node",
        json!({ "node_id": 9, "name": "fake", "api_base_url": "http://127.0.0.1:25160",
                "catch_up_timeout_secs": 2 }),
    );
    assert_eq!(s, 504, "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains("did not catch up within 2s") && msg.contains("removed again"), "{v}");
    let info = wait_for("the learner to be removed again", T, || {
        let i = c.nodes[leader - 1].info()?;
        (i["learners"] == json!([])).then_some(i.clone()).ok_or(i.to_string())
    });
    assert_eq!(info["voters"], json!([1, 2, 3]));
    kv_put(&lurl, "still", "writable").unwrap();
}
