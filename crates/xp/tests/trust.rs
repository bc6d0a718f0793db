//! The node's trust boundaries, attacked with real `xp` processes on loopback: replayed join
//! tokens, replacement by URL, a captured Raft RPC, a redirect that changes the key, the admin
//! token sent where a response pointed, and file modes. Ports 30000-30099 belong to this file.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use xp_testkit::{http, join_token, kv_get, kv_put, send_json, wait_for, Cluster, ADMIN_TOKEN};

const T: Duration = Duration::from_secs(20);

/// One request a [`FakeServer`] received.
#[derive(Clone, Debug)]
struct Captured {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

/// An HTTP server that records every request and answers each with `status` and `body`: an
/// attacker's node, or a proxy that logs what it is sent.
struct FakeServer {
    port: u16,
    seen: Arc<Mutex<Vec<Captured>>>,
}

impl FakeServer {
    fn start(port: u16, status: u16, body: Value) -> FakeServer {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let seen: Arc<Mutex<Vec<Captured>>> = Arc::default();
        let log = seen.clone();
        let body = body.to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut r = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_err() || line.is_empty() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or_default().to_owned();
                let path = parts.next().unwrap_or_default().to_owned();
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
                    }
                }
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k == "content-length")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                let mut buf = vec![0; len];
                let _ = r.read_exact(&mut buf);
                log.lock().unwrap().push(Captured {
                    method,
                    path,
                    headers,
                    body: String::from_utf8_lossy(&buf).into(),
                });
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        FakeServer { port, seen }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<Captured> {
        self.seen.lock().unwrap().clone()
    }
}

fn admin() -> String {
    format!("Bearer {ADMIN_TOKEN}")
}

fn voter_ids(v: &Value) -> Vec<u64> {
    v["voters"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
}

/// A token that admitted a node is spent: presented again (by anyone, with any URL, after the
/// node was removed, after a leader change) it is refused at once and changes nothing.
#[test]
fn a_join_token_admits_one_node_once() {
    let mut c = Cluster::new(30000, 4, 3);
    let leader = c.boot(3, T);
    let lurl = c.nodes[leader - 1].url();
    let (token, id) = join_token(&lurl, 600).unwrap();
    c.nodes[3].join(&token);
    c.node(4).start();
    wait_for("node4 to become a voter", T, || {
        let v = c.nodes[leader - 1].info()?;
        voter_ids(&v).contains(&id).then_some(()).ok_or(v.to_string())
    });

    // The admin removes node4; an attacker who saw the token replays it with node2's URL.
    wait_for("the admin to remove node4 (503 while the join's change commits)", T, || {
        let (s, v) = send_json(
            "POST",
            &format!("{lurl}/api/admin/cluster/remove-node"),
            &json!({"node_id": id, "confirm_voters_after": 3}),
            &[("Authorization", &admin())],
        )?;
        (s == 200).then_some(()).ok_or(format!("{s} {v}"))
    });
    c.node(4).terminate();
    let before = c.nodes[leader - 1].info().unwrap();
    let started = std::time::Instant::now();
    // Replayed many times, with other joiner ids too: refused at once, and nothing is written
    // (a replay must not grow the log).
    for k in 0..20 {
        let replay = json!({
            "token": token, "node_name": "evil", "api_base_url": c.nodes[1].url(),
            "joiner": format!("{k:032x}"),
        });
        let (s, v) = send_json("POST", &format!("{lurl}/api/cluster/join"), &replay, &[]).unwrap();
        assert_eq!(s, 409, "{v}");
        assert!(v["error"].as_str().unwrap().contains("already used"), "{v}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused only after {:?}",
        started.elapsed()
    );
    let after = c.nodes[leader - 1].info().unwrap();
    assert_eq!(voter_ids(&after), voter_ids(&before));
    assert_eq!(after["members"], before["members"]);
    assert_eq!(after["last_log_index"], before["last_log_index"], "replays wrote to the log");
    let replay = json!({"token": token, "node_name": "evil", "api_base_url": c.nodes[1].url()});

    // Still refused by the next leader, after the old one stopped.
    c.node(leader).terminate();
    let rest: Vec<usize> = (1..=3).filter(|i| *i != leader).collect();
    let next = c.wait_leader(&rest, T);
    let (s, v) =
        send_json("POST", &format!("{}/api/cluster/join", c.nodes[next - 1].url()), &replay, &[])
            .unwrap();
    assert_eq!(s, 409, "{v}");
}

/// A joiner at the URL of an existing member replaces it only when the admin minted the token
/// with `replaces`; the URL alone replaces nothing.
#[test]
fn only_a_token_naming_a_member_replaces_it() {
    let mut c = Cluster::new(30010, 3, 3);
    let leader = c.boot(3, T);
    let lurl = c.nodes[leader - 1].url();
    let tokens = format!("{lurl}/api/admin/cluster/join-tokens");
    let victim = (1..=3).find(|i| *i != leader).unwrap();
    let victim_id = c.nodes[victim - 1].info().unwrap()["node_id"].as_u64().unwrap();

    // `replaces` must name a current member.
    let (s, v) = send_json(
        "POST",
        &tokens,
        &json!({"ttl_seconds": 60, "replaces": 99}),
        &[("Authorization", &admin())],
    )
    .unwrap();
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("node 99 is not a voter"), "{v}");

    // A token without `replaces`, used at the victim's URL: a fourth voter, nobody replaced.
    c.node(victim).terminate();
    assert!(c.nodes[victim - 1].xp(&["wipe", "--yes"]).status.success());
    let (token, new_id) = join_token(&lurl, 60).unwrap();
    c.nodes[victim - 1].join(&token);
    c.node(victim).start();
    let v = wait_for("the joiner to become a voter", T, || {
        let v = c.nodes[leader - 1].info()?;
        voter_ids(&v).contains(&new_id).then_some(v.clone()).ok_or(v.to_string())
    });
    let mut want = vec![1, 2, 3, new_id];
    want.sort();
    assert_eq!(voter_ids(&v), want, "a URL match must not replace node {victim_id}");
}

/// Raft RPCs carry no credential that a peer (or anyone on the path) can reuse: a captured
/// request, re-aimed at another route, is refused.
#[test]
fn a_captured_raft_rpc_authenticates_nothing_else() {
    let mut c = Cluster::new(30020, 1, 1);
    c.boot(1, T);
    let url = c.nodes[0].url();
    let fake = FakeServer::start(30029, 503, json!({"error": "busy"}));
    // The admin adds a node that turns out to be hostile: the leader replicates to it.
    let (s, v) = send_json(
        "POST",
        &format!("{url}/api/admin/cluster/add-node"),
        &json!({"node_id": 7, "name": "evil", "api_base_url": fake.url(), "catch_up_timeout_secs": 2}),
        &[("Authorization", &admin())],
    )
    .unwrap();
    assert_eq!(s, 504, "{v}");
    let got = fake.requests();
    let append = got.iter().find(|r| r.path == "/raft/append").expect("the leader sent appends");
    let secret = xp_config::Secret::new(xp_testkit::CLUSTER_SECRET);
    let key = xp::token::hex(&xp::token::derive_key(&secret, "xp-raft-rpc-v1"));
    for (k, v) in &append.headers {
        assert!(!v.contains(&key), "header {k} carries the cluster's RPC key");
    }
    // Re-aim everything the fake was sent at node 1's hold-elections route.
    let mut headers: Vec<(&str, String)> = append
        .headers
        .iter()
        .filter(|(k, _)| k.starts_with("x-xp-") && k != "x-xp-to-node")
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    headers.push(("x-xp-to-node", "1".into()));
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (s, _, body) =
        http("POST", &format!("{url}/raft/hold-elections"), Some(r#"{"ms":60000}"#), &headers)
            .unwrap();
    assert_eq!(s, 401, "{body}");
    // The very request it was sent, replayed to node 1, is refused as well.
    let mut verbatim: Vec<(&str, &str)> = append
        .headers
        .iter()
        .filter(|(k, _)| k.starts_with("x-xp-"))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    verbatim.retain(|(k, _)| *k != "x-xp-to-node");
    verbatim.push(("x-xp-to-node", "1"));
    let (s, _, body) =
        http(&append.method, &format!("{url}/raft/append"), Some(&append.body), &verbatim).unwrap();
    assert_eq!(s, 401, "{body}");
}

/// A follower's redirect keeps the key as sent: `foo%3Fbar` must not become `foo?bar` (which
/// the leader reads as key `foo`).
#[test]
fn a_redirect_keeps_the_key_encoded() {
    let mut c = Cluster::new(30030, 3, 3);
    let leader = c.boot(3, T);
    let lurl = c.nodes[leader - 1].url();
    kv_put(&lurl, "foo", "original").unwrap();
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let furl = c.nodes[follower - 1].url();
    let body = json!({"value": "other"}).to_string();
    let (s, headers, text) =
        http("PUT", &format!("{furl}/api/kv/foo%3Fbar"), Some(&body), &[]).unwrap();
    assert_eq!(s, 307, "{text}");
    let loc = headers.iter().find(|(k, _)| k == "location").map(|(_, v)| v.clone()).unwrap();
    assert_eq!(loc, format!("{lurl}/api/kv/foo%3Fbar"));
    let (s, _, text) = http("PUT", &loc, Some(&body), &[]).unwrap();
    assert_eq!(s, 200, "{text}");
    assert_eq!(kv_get(&lurl, "foo").unwrap().as_deref(), Some("original"));
    assert_eq!(kv_get(&lurl, "foo%3Fbar").unwrap().as_deref(), Some("other"));
    // Every byte a key may hold survives the trip (space, slash, percent, unicode).
    // (key as sent, as the redirect names it): dots are encoded too, since a key `..` sent as
    // it is would be a dot segment.
    let keys = [
        ("a%20b", "a%20b"),
        ("a%2Fb", "a%2Fb"),
        ("100%25", "100%25"),
        ("%C3%A9t%C3%A9", "%C3%A9t%C3%A9"),
        ("%2E%2E", "%2E%2E"),
        ("a.b", "a%2Eb"),
    ];
    for (sent, named) in keys {
        let (s, headers, _) =
            http("PUT", &format!("{furl}/api/kv/{sent}"), Some(&body), &[]).unwrap();
        assert_eq!(s, 307);
        let loc = headers.iter().find(|(k, _)| k == "location").map(|(_, v)| v.clone()).unwrap();
        assert_eq!(loc, format!("{lurl}/api/kv/{named}"));
        let (s, _, text) = http("PUT", &loc, Some(&body), &[]).unwrap();
        assert_eq!(s, 200, "{sent}: {text}");
    }
    assert_eq!(kv_get(&lurl, "%2E%2E").unwrap().as_deref(), Some("other"));
}

/// `xp-ops` never sends the admin token to a URL it only learnt from an answer (a hostile or
/// confused node's 421); it says where the leader is and how to ask it.
#[test]
fn xp_ops_sends_the_admin_token_only_where_the_operator_pointed() {
    let c = Cluster::new(30040, 1, 1);
    let sink = FakeServer::start(30048, 200, json!({}));
    let liar = FakeServer::start(
        30049,
        421,
        json!({"error": "not the leader", "leader_api_base_url": sink.url()}),
    );
    let o = c.nodes[0].xp_ops(&["cluster", "transfer-leader", "--url", &liar.url()]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{stderr}");
    let got_token =
        liar.requests().iter().any(|r| r.headers.iter().any(|(k, _)| k == "authorization"));
    assert!(got_token, "the operator's own target gets the token: the check below could fail");
    for r in sink.requests() {
        for (k, v) in &r.headers {
            assert!(!v.contains(ADMIN_TOKEN), "the admin token went to {} in {k}", sink.url());
        }
    }
    assert!(stderr.contains(&sink.url()) && stderr.contains("--url"), "{stderr}");
}

/// A join token is never taken from the command line, where `ps` shows it to every user.
#[test]
fn xp_join_refuses_a_token_in_argv() {
    let c = Cluster::new(30060, 1, 0);
    let o = c.nodes[0].xp(&["join", "--token", "a.b"]);
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("--token-file"), "{stderr}");
    let o = c.nodes[0].xp(&["join", "--token-file", "/nonexistent/token"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/token"));
    assert!(!c.nodes[0].data_dir.join("join.json").exists());
}

/// Files that hold secrets or cluster data are the node user's alone.
#[test]
fn secret_and_data_files_are_private() {
    let mut c = Cluster::new(30050, 4, 3);
    let leader = c.boot(3, T);
    let lurl = c.nodes[leader - 1].url();
    kv_put(&lurl, "k", "v").unwrap();
    let (token, _) = join_token(&lurl, 60).unwrap();
    c.nodes[3].join(&token);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&c.nodes[3].data_dir.join("join.json")), 0o600);
    assert_eq!(mode(&c.nodes[3].data_dir), 0o700);
    for n in &c.nodes[..3] {
        assert_eq!(mode(&n.data_dir), 0o700, "{}", n.data_dir.display());
        for e in walk(&n.data_dir) {
            let want = if e.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode(&e), want, "{}", e.display());
        }
    }
    let backup = c.dir.path().join("backup.json");
    let o = c.nodes[leader - 1].xp_ops(&["cluster", "backup", "--out", backup.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(mode(&backup), 0o600);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}
