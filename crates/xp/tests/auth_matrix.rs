//! The auth matrix: every route of the node's API, asked with each kind of credential, through
//! `Router::oneshot`-style calls on the routers of a real two-node TLS cluster (in this
//! process; the nodes replicate over real TLS between themselves). The expected statuses are
//! the table below; the same table, rendered, is the matrix in `docs/security.md` (run with
//! `XP_BLESS=1` to rewrite it there). Ports 31000-31099 belong to this file.

use std::path::Path;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::Vote;
use serde_json::json;
use xp::rpc_auth::{now_ms, RpcAuth};
use xp::tls::ClientCert;
use xp_config::{Config, Secret};
use xp_store::TypeConfig;

const ADMIN: &str = "matrix-admin-token-0123456789";
const SECRET: &str = "matrix-cluster-secret-0123456789";

/// How a route is authenticated.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Public,
    Admin,
    Join,
    Raft,
}

/// The columns: what the request carries.
#[derive(Clone, Copy)]
enum Column {
    /// No client certificate, no credential.
    Nothing,
    /// The right credential (admin token, join token, signature) but no client certificate.
    RightNoCert,
    /// A client certificate from the cluster CA, no credential.
    CertOnly,
    /// A certificate and a wrong credential (another admin token, a forged join token, a
    /// signature made with another cluster's key).
    CertWrong,
    /// A certificate and the right credential, to the leader.
    CertRight,
    /// The same, to a follower.
    CertRightFollower,
}

const COLUMNS: [(Column, &str); 6] = [
    (Column::Nothing, "nothing"),
    (Column::RightNoCert, "right credential, no client cert"),
    (Column::CertOnly, "client cert"),
    (Column::CertWrong, "client cert + wrong credential"),
    (Column::CertRight, "client cert + right credential"),
    (Column::CertRightFollower, "same, on a follower"),
];

/// (method, path, kind, expected status per column). A right credential is sent with a body
/// that passes authentication but changes nothing (an unknown node id, a stale vote), so the
/// status after authentication shows too.
fn table() -> Vec<(&'static str, &'static str, Kind, [u16; 6])> {
    vec![
        ("GET", "/api/cluster/info", Kind::Public, [200, 200, 200, 200, 200, 200]),
        ("GET", "/api/cluster/status", Kind::Public, [200, 200, 200, 200, 200, 200]),
        ("GET", "/api/kv/matrix", Kind::Public, [404, 404, 404, 404, 404, 307]),
        ("PUT", "/api/kv/matrix", Kind::Public, [200, 200, 200, 200, 200, 307]),
        ("POST", "/api/cluster/join", Kind::Join, [422, 400, 422, 401, 400, 400]),
        ("POST", "/api/admin/cluster/join-tokens", Kind::Admin, [401, 401, 401, 403, 200, 421]),
        ("POST", "/api/admin/cluster/leader-transfer", Kind::Admin, [401, 401, 401, 403, 400, 421]),
        ("POST", "/api/admin/cluster/remove-node", Kind::Admin, [401, 401, 401, 403, 404, 421]),
        ("POST", "/api/admin/cluster/add-node", Kind::Admin, [401, 401, 401, 403, 400, 400]),
        ("GET", "/api/admin/cluster/backup", Kind::Admin, [401, 401, 401, 403, 200, 421]),
        ("POST", "/raft/append", Kind::Raft, [401, 401, 401, 401, 200, 200]),
        ("POST", "/raft/vote", Kind::Raft, [401, 401, 401, 401, 200, 200]),
        ("POST", "/raft/snapshot", Kind::Raft, [401, 401, 401, 401, 422, 422]),
        ("POST", "/raft/hold-elections", Kind::Raft, [401, 401, 401, 401, 200, 200]),
        ("POST", "/raft/probe", Kind::Raft, [401, 401, 401, 401, 200, 200]),
        ("POST", "/raft/remove-member", Kind::Raft, [401, 401, 401, 401, 404, 421]),
        // Last: a right credential makes the node campaign.
        ("POST", "/raft/campaign", Kind::Raft, [401, 401, 401, 401, 200, 200]),
    ]
}

fn env(dir: &Path, i: u16, files: &certs::NodeFiles) -> Config {
    let port = 31000 + i;
    let mut text = format!(
        "XP_DATA_DIR={}\nXP_NODE_NAME=node{i}\nXP_API_BASE_URL=https://127.0.0.1:{port}\n\
         XP_BIND=127.0.0.1:{port}\nXP_ADMIN_TOKEN={ADMIN}\nXP_CLUSTER_SECRET={SECRET}\nXP_NODE_ID={i}\n\
         XP_TLS_CERT={}\nXP_TLS_KEY={}\nXP_TLS_CA={}\n",
        dir.join(format!("data{i}")).display(),
        files.cert.display(),
        files.key.display(),
        files.ca.display()
    );
    if i == 1 {
        text.push_str(
            "XP_BOOTSTRAP_MEMBERS=1=node1@https://127.0.0.1:31001,2=node2@https://127.0.0.1:31002\n",
        );
    }
    Config::parse(&dir.join(format!("node{i}.env")), &text).unwrap()
}

/// The request for one cell.
fn request(
    method: &str,
    path: &str,
    kind: Kind,
    column: Column,
    to: u64,
    from: u64,
    join_token: &str,
) -> Request<Body> {
    let right =
        matches!(column, Column::RightNoCert | Column::CertRight | Column::CertRightFollower);
    let body: Vec<u8> = match (kind, path) {
        (Kind::Public, _) if method == "PUT" => json!({"value": "v"}).to_string().into(),
        (Kind::Public, _) => Vec::new(),
        (Kind::Join, _) => match column {
            Column::Nothing | Column::CertOnly => b"{}".to_vec(),
            Column::CertWrong => json!({"token": "e30.c2ln", "node_name": "n", "api_base_url": "https://h:1"})
                .to_string()
                .into(),
            _ => json!({"token": join_token, "node_name": "bad name!", "api_base_url": "https://h:1"})
                .to_string()
                .into(),
        },
        (_, "/api/admin/cluster/join-tokens") => json!({"ttl_seconds": 60}).to_string().into(),
        (_, "/api/admin/cluster/leader-transfer") => json!({"target": 99}).to_string().into(),
        (_, "/api/admin/cluster/remove-node") | (_, "/raft/remove-member") => {
            json!({"node_id": 99, "confirm_voters_after": 1}).to_string().into()
        }
        (_, "/api/admin/cluster/add-node") => {
            json!({"node_id": 0, "name": "n", "api_base_url": "https://h:1"}).to_string().into()
        }
        (_, "/raft/append") => serde_json::to_vec(&AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new(0, from),
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        })
        .unwrap(),
        (_, "/raft/vote") => serde_json::to_vec(&VoteRequest::new(Vote::new(0, from), None)).unwrap(),
        (_, "/raft/snapshot") => b"{\"not\": \"a chunk\"}".to_vec(),
        (_, "/raft/hold-elections") => json!({"ms": 0}).to_string().into(),
        _ => b"{}".to_vec(),
    };
    let mut b =
        Request::builder().method(method).uri(path).header("content-type", "application/json");
    match (kind, column) {
        (Kind::Admin, Column::CertWrong) => {
            b = b.header("authorization", "Bearer wrong-token-0123456789")
        }
        (Kind::Admin, _) if right => b = b.header("authorization", format!("Bearer {ADMIN}")),
        (Kind::Raft, Column::CertWrong)
        | (Kind::Raft, Column::RightNoCert | Column::CertRight | Column::CertRightFollower) => {
            let key = match column {
                Column::CertWrong => Secret::new("another-cluster-secret-0123"),
                _ => Secret::new(SECRET),
            };
            let headers = [("x-xp-from-node", from.to_string()), ("x-xp-to-node", to.to_string())];
            for (k, v) in &RpcAuth::new(&key).sign(method, path, &headers, &body, now_ms()) {
                b = b.header(k.as_str(), v.to_str().unwrap());
            }
        }
        _ => {}
    }
    let mut req = b.body(Body::from(body)).unwrap();
    if !matches!(column, Column::Nothing | Column::RightNoCert) {
        req.extensions_mut().insert(ClientCert);
    }
    req
}

fn render(rows: &[(String, Vec<u16>)]) -> String {
    let mut out = String::from("| route |");
    for (_, name) in COLUMNS {
        out.push_str(&format!(" {name} |"));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(COLUMNS.len()));
    out.push('\n');
    for (route, statuses) in rows {
        out.push_str(&format!("| `{route}` |"));
        for s in statuses {
            let reason =
                StatusCode::from_u16(*s).ok().and_then(|c| c.canonical_reason()).unwrap_or("");
            out.push_str(&format!(" {s} {reason} |"));
        }
        out.push('\n');
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_with_every_credential() {
    let dir = tempfile::tempdir().unwrap();
    let ca = certs::Ca::generate().unwrap();
    let hosts = ["127.0.0.1".to_owned()];
    let files: Vec<_> = (1..=2)
        .map(|i| {
            certs::write_node(&dir.path().join(format!("tls{i}")), &ca, &format!("node{i}"), &hosts)
                .unwrap()
        })
        .collect();
    let n1 = xp::RunningNode::start(env(dir.path(), 1, &files[0])).await.unwrap();
    let n2 = xp::RunningNode::start(env(dir.path(), 2, &files[1])).await.unwrap();
    let nodes = [&n1, &n2];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let leader = loop {
        let m = n1.app.raft.metrics().borrow().clone();
        let has_id = n1.app.sm.read().unwrap().data.cluster_id.is_some();
        let both = n2.app.raft.metrics().borrow().current_leader == m.current_leader;
        if let (Some(l), true, true) = (m.current_leader, has_id, both) {
            break l;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no leader with a cluster id within 20 s: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (lead, follow) = if leader == 1 { (nodes[0], nodes[1]) } else { (nodes[1], nodes[0]) };
    let lead_router = xp::router::router(lead.app.clone());
    let follow_router = xp::router::router(follow.app.clone());
    let join_token = {
        let req = request(
            "POST",
            "/api/admin/cluster/join-tokens",
            Kind::Admin,
            Column::CertRight,
            0,
            0,
            "",
        );
        let res = tower_service::Service::call(&mut lead_router.clone(), req).await.unwrap();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["join_token"].as_str().unwrap().to_owned()
    };

    let mut rows = Vec::new();
    let mut wrong = Vec::new();
    for (method, path, kind, want) in table() {
        let mut got = Vec::new();
        for (column, name) in COLUMNS {
            let (router, node) = match column {
                Column::CertRightFollower => (&follow_router, follow),
                _ => (&lead_router, lead),
            };
            let (to, from) = (node.app.id, if node.app.id == 1 { 2 } else { 1 });
            let req = request(method, path, kind, column, to, from, &join_token);
            let res = tower_service::Service::call(&mut router.clone(), req).await.unwrap();
            let status = res.status().as_u16();
            if status != want[got.len()] {
                let bytes = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
                wrong.push(format!(
                    "{method} {path} [{name}]: {status}, expected {}: {}",
                    want[got.len()],
                    String::from_utf8_lossy(&bytes)
                ));
            }
            // The safety property the table encodes: only a right credential gets past
            // authentication on a guarded route.
            if kind != Kind::Public
                && !matches!(column, Column::CertRight | Column::CertRightFollower)
            {
                assert!(
                    !(200..300).contains(&status),
                    "{method} {path} answered {status} to [{name}]"
                );
            }
            got.push(status);
        }
        rows.push((format!("{method} {path}"), got));
    }
    assert!(wrong.is_empty(), "statuses differ from the table:\n{}", wrong.join("\n"));

    let table = render(&rows);
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/security.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let (begin, end) = ("<!-- auth-matrix:begin -->\n", "<!-- auth-matrix:end -->");
    let start = doc.find(begin).expect("docs/security.md has the begin marker") + begin.len();
    let stop = doc.find(end).expect("docs/security.md has the end marker");
    if std::env::var_os("XP_BLESS").is_some() {
        let new = format!("{}{table}{}", &doc[..start], &doc[stop..]);
        std::fs::write(&doc_path, new).unwrap();
    } else {
        assert_eq!(
            &doc[start..stop],
            table,
            "docs/security.md's auth matrix is out of date: run `XP_BLESS=1 cargo test -p xp --test auth_matrix`"
        );
    }
    n2.shutdown().await;
    n1.shutdown().await;
}
