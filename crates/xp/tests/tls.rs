//! A cluster with TLS on (XP_TLS_CERT, XP_TLS_KEY, XP_TLS_CA): HTTPS only, Raft and admin
//! routes need a client certificate from the cluster CA, and the whole lifecycle (election,
//! replication, redirects, xp-ops, healthcheck, a join) works over it. Real `xp` processes on
//! loopback; ports 30100-30199 belong to this file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use xp_testkit::{wait_for, Node, ADMIN_TOKEN, CLUSTER_SECRET};

const T: Duration = Duration::from_secs(20);
const BASE: u16 = 30100;

struct Pki {
    dir: PathBuf,
    ca: certs::Ca,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        Pki { dir: dir.to_owned(), ca: certs::Ca::generate().unwrap() }
    }
    fn issue(&self, name: &str) -> certs::NodeFiles {
        let hosts = ["127.0.0.1".to_owned(), "localhost".to_owned()];
        certs::write_node(&self.dir.join(name), &self.ca, name, &hosts).unwrap()
    }
}

fn env_file(dir: &Path, i: u16, files: &certs::NodeFiles, bootstrap: Option<u16>) -> PathBuf {
    let port = BASE + i;
    let mut env = format!(
        "XP_DATA_DIR={}\nXP_NODE_NAME=node{i}\nXP_API_BASE_URL=https://127.0.0.1:{port}\n\
         XP_BIND=127.0.0.1:{port}\nXP_ADMIN_TOKEN={ADMIN_TOKEN}\nXP_CLUSTER_SECRET={CLUSTER_SECRET}\n\
         XP_TLS_CERT={}\nXP_TLS_KEY={}\nXP_TLS_CA={}\n",
        dir.join(format!("data{i}")).display(),
        files.cert.display(),
        files.key.display(),
        files.ca.display()
    );
    if let Some(n) = bootstrap {
        env.push_str(&format!("XP_NODE_ID={i}\n"));
        if i == 1 {
            let members: Vec<String> =
                (1..=n).map(|j| format!("{j}=node{j}@https://127.0.0.1:{}", BASE + j)).collect();
            env.push_str(&format!("XP_BOOTSTRAP_MEMBERS={}\n", members.join(",")));
        }
    }
    let path = dir.join(format!("node{i}.env"));
    std::fs::write(&path, env).unwrap();
    path
}

/// An HTTPS client trusting `ca` (or nothing), presenting `identity` (or nothing).
fn client(ca: Option<&Path>, identity: Option<&certs::NodeFiles>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10));
    if let Some(ca) = ca {
        b = b.add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap(),
        );
    }
    if let Some(f) = identity {
        let mut pem = std::fs::read(&f.cert).unwrap();
        pem.push(b'\n');
        pem.extend(std::fs::read(&f.key).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

fn url(i: u16) -> String {
    format!("https://127.0.0.1:{}", BASE + i)
}

struct Answer {
    status: u16,
    body: Value,
    location: String,
}

fn send(
    rt: &tokio::runtime::Runtime,
    c: &reqwest::Client,
    method: &str,
    url: &str,
    body: Option<Value>,
    bearer: Option<&str>,
) -> Result<Answer, String> {
    rt.block_on(async {
        let mut req = c.request(method.parse().unwrap(), url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.map_err(|e| format!("{e:?}"))?;
        let status = res.status().as_u16();
        let location = res
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = res.json().await.unwrap_or(Value::Null);
        Ok(Answer { status, body, location })
    })
}

#[test]
fn a_tls_cluster_serves_https_only_and_guards_raft_and_admin_with_client_certs() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let files: Vec<certs::NodeFiles> = (1..=4).map(|i| pki.issue(&format!("node{i}"))).collect();
    let operator = pki.issue("operator");
    let rogue = Pki::new(&dir.path().join("rogue")).issue("rogue");
    let mut nodes: Vec<Node> = (1..=4u16)
        .map(|i| {
            let bootstrap = (i <= 3).then_some(3);
            let env = env_file(dir.path(), i, &files[i as usize - 1], bootstrap);
            let mut n = Node::from_env(
                &env,
                &dir.path().join(format!("data{i}")),
                BASE + i,
                &dir.path().join(format!("node{i}.log")),
            );
            n.name = format!("node{i}");
            n
        })
        .collect();
    for n in &mut nodes[..3] {
        n.start();
    }
    let ca = files[0].ca.clone();
    let anon = client(Some(&ca), None);
    let op = client(Some(&ca), Some(&operator));

    let leader = wait_for("a leader over HTTPS", T, || {
        let infos: Vec<Value> = (1..=3)
            .map(|i| send(&rt, &anon, "GET", &format!("{}/api/cluster/info", url(i)), None, None))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .map(|a| a.body)
            .collect();
        let leaders: Vec<u16> =
            (1..=3).filter(|i| infos[*i as usize - 1]["role"] == "leader").collect();
        match leaders[..] {
            [l] if infos.iter().all(|v| v["leader_id"] == l as u64 && v["cluster_id"] != "") => {
                Ok(l)
            }
            _ => Err(format!("{infos:?}")),
        }
    });
    let lurl = url(leader);
    let follower = (1..=3).find(|i| *i != leader).unwrap();

    // Plain HTTP gets nowhere; a client that does not trust the CA, or presents a certificate
    // from another CA, cannot connect.
    let plain = xp_testkit::http(
        "GET",
        &format!("http://127.0.0.1:{}/api/cluster/info", BASE + leader),
        None,
        &[],
    );
    assert!(plain.map(|(s, _, _)| s) != Ok(200), "plain HTTP must not be served");
    let e = send(&rt, &client(None, None), "GET", &format!("{lurl}/api/cluster/info"), None, None);
    assert!(e.is_err(), "a client that does not trust the CA must fail to connect");
    let e = send(
        &rt,
        &client(Some(&ca), Some(&rogue)),
        "GET",
        &format!("{lurl}/api/cluster/info"),
        None,
        None,
    );
    assert!(e.is_err(), "a certificate from another CA must fail the handshake");

    // The auth matrix over real TLS: (client, route, bearer) -> status.
    let tokens = format!("{lurl}/api/admin/cluster/join-tokens");
    type Case<'a> = (&'a str, &'a reqwest::Client, &'a str, String, Option<&'a str>, u16);
    let cases: Vec<Case> = vec![
        ("info, no client cert", &anon, "GET", format!("{lurl}/api/cluster/info"), None, 200),
        ("kv write, no client cert", &anon, "PUT", format!("{lurl}/api/kv/k"), None, 200),
        ("admin, token but no client cert", &anon, "POST", tokens.clone(), Some(ADMIN_TOKEN), 401),
        ("admin, client cert but no token", &op, "POST", tokens.clone(), None, 401),
        (
            "admin, client cert and wrong token",
            &op,
            "POST",
            tokens.clone(),
            Some("wrong-token-0123456789"),
            403,
        ),
        ("admin, client cert and token", &op, "POST", tokens.clone(), Some(ADMIN_TOKEN), 200),
        ("raft, no client cert", &anon, "POST", format!("{lurl}/raft/vote"), None, 401),
        ("raft, client cert but unsigned", &op, "POST", format!("{lurl}/raft/vote"), None, 401),
    ];
    for (what, c, method, u, bearer, want) in cases {
        let body = if method == "PUT" { Some(json!({"value": "v"})) } else { Some(json!({})) };
        let a = send(&rt, c, method, &u, body, bearer).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(a.status, want, "{what}: {}", a.body);
    }

    // A follower redirects to the leader's https URL, and the value replicated.
    let a = send(&rt, &anon, "GET", &format!("{}/api/kv/k", url(follower)), None, None).unwrap();
    assert_eq!((a.status, a.location.as_str()), (307, format!("{lurl}/api/kv/k").as_str()));
    let a = send(&rt, &anon, "GET", &a.location, None, None).unwrap();
    assert_eq!(a.body["value"], "v");

    // xp-ops over TLS from a follower's env file (it follows the 421 to the CA-verified
    // leader), and the container healthcheck.
    let o = nodes[follower as usize - 1].xp_ops(&["cluster", "backup", "--out", "-"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = nodes[0].xp(&["healthcheck"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // A TLS cluster takes no member at an http:// URL (it would replicate in clear text to a
    // node that needs no certificate): a join or an add-node naming one is refused, and
    // nothing changes.
    let a = send(&rt, &op, "POST", &tokens, Some(json!({"ttl_seconds": 60})), Some(ADMIN_TOKEN))
        .unwrap();
    let plain_join = json!({"token": a.body["join_token"], "node_name": "thief", "api_base_url": "http://127.0.0.1:30199", "joiner": "ab".repeat(16)});
    let r = send(&rt, &anon, "POST", &format!("{lurl}/api/cluster/join"), Some(plain_join), None)
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body["error"].as_str().unwrap().contains("https://"), "{}", r.body);
    let add = json!({"node_id": 99, "name": "thief", "api_base_url": "http://127.0.0.1:30199"});
    let r = send(
        &rt,
        &op,
        "POST",
        &format!("{lurl}/api/admin/cluster/add-node"),
        Some(add),
        Some(ADMIN_TOKEN),
    )
    .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    let v = send(&rt, &anon, "GET", &format!("{lurl}/api/cluster/info"), None, None).unwrap().body;
    assert_eq!(v["members"].as_array().unwrap().len(), 3, "{v}");

    // A fourth node with its own certificate joins over TLS.
    let a = send(&rt, &op, "POST", &tokens, Some(json!({"ttl_seconds": 60})), Some(ADMIN_TOKEN))
        .unwrap();
    let token = a.body["join_token"].as_str().unwrap().to_owned();
    let id = a.body["node_id"].as_u64().unwrap();
    nodes[3].join(&token);
    nodes[3].start();
    wait_for("node4 to join as a voter over TLS", T, || {
        let a = send(&rt, &anon, "GET", &format!("{}/api/cluster/info", url(4)), None, None)?;
        let voters = a.body["voters"].as_array().cloned().unwrap_or_default();
        (voters.iter().any(|v| v == id) && a.body["last_applied_index"].as_u64() > Some(0))
            .then_some(())
            .ok_or(a.body.to_string())
    });
    let a = send(&rt, &anon, "GET", &format!("{}/api/kv/k", url(4)), None, None).unwrap();
    assert!(a.status == 200 || a.status == 307, "{}", a.body);
}
