//! Test-only helpers: start real `xp` node processes on loopback with temp data dirs, talk to
//! them over HTTP and wait for conditions with a bound and a useful failure message.
//!
//! The HTTP client here is a few lines over `std::net` on purpose: pulling a client crate's
//! extra features into test builds would make cargo compile the node's dependencies twice.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const CLUSTER_SECRET: &str = "test-cluster-secret-0123456789";

/// Path of a binary built by this workspace (`xp`, `xp-ops`), building it if it is missing.
pub fn bin(name: &str) -> PathBuf {
    // target/<triple>/debug/deps/<test-exe> -> target/<triple>/debug/<name>
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", name, "--bin", name])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p {name} failed");
    }
    path
}

/// Status, headers (lower-case names) and body of an HTTP answer.
pub type HttpAnswer = (u16, Vec<(String, String)>, String);

/// A minimal HTTP/1.1 exchange. Returns status, headers (lower-case names) and body.
pub fn http(
    method: &str,
    url: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<HttpAnswer, String> {
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut s = TcpStream::connect(authority).map_err(|e| format!("connect {authority}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
    let body = body.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("truncated response")?;
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or("bad status line")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_owned() };
    Ok((status, headers, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// `GET` returning parsed JSON with the status.
pub fn get_json(url: &str) -> Result<(u16, Value), String> {
    let (status, _, body) = http("GET", url, None, &[])?;
    Ok((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

/// `POST`/`PUT` JSON returning parsed JSON with the status.
pub fn send_json(
    method: &str,
    url: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> Result<(u16, Value), String> {
    let (status, _, text) = http(method, url, Some(&body.to_string()), headers)?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// Polls `f` until it returns `Some` or `timeout` passes; the panic says what it last saw.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    let mut last = String::from("nothing yet");
    while start.elapsed() < timeout {
        match f() {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out after {timeout:?} waiting for {what}; last saw: {last}");
}

/// One node process and its files.
pub struct Node {
    pub name: String,
    pub port: u16,
    pub env_file: PathBuf,
    pub data_dir: PathBuf,
    pub log_file: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// A node for an existing env file (e.g. a copy of another node's data dir).
    pub fn from_env(env_file: &Path, data_dir: &Path, port: u16, log_file: &Path) -> Node {
        Node {
            name: format!("node@{port}"),
            port,
            env_file: env_file.to_owned(),
            data_dir: data_dir.to_owned(),
            log_file: log_file.to_owned(),
            child: None,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    /// Starts the node with extra environment variables (e.g. a test-only fault hook).
    pub fn start_with_env(&mut self, env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(&self.log_file).unwrap();
        let child = Command::new(bin("xp"))
            .arg("--env-file")
            .arg(&self.env_file)
            .arg("run")
            .env("RUST_LOG", "info,openraft=warn")
            .envs(env.iter().copied())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn xp");
        self.child = Some(child);
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// Waits (bounded) for the process to exit on its own; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let mut c = self.child.take().expect("node is running");
        let start = Instant::now();
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status.code();
            }
            if start.elapsed() > timeout {
                let _ = c.kill();
                let _ = c.wait();
                panic!("{} did not exit within {timeout:?}; log:\n{}", self.name, self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM; returns how long the process took to exit, and its exit code.
    pub fn terminate(&mut self) -> (Duration, Option<i32>) {
        let mut c = self.child.take().expect("node is running");
        let start = Instant::now();
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return (start.elapsed(), status.code());
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = c.kill();
                panic!("{} did not exit within 20s of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Runs `xp <args>` (not `run`) against this node's env file.
    pub fn xp(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin("xp"))
            .arg("--env-file")
            .arg(&self.env_file)
            .args(args)
            .output()
            .expect("run xp")
    }

    /// `xp join --token-file -`: records `token` on this (stopped, empty) node, handing it
    /// over on standard input so that it never shows in a process list.
    pub fn xp_join(&self, token: &str) -> std::process::Output {
        let mut child = Command::new(bin("xp"))
            .arg("--env-file")
            .arg(&self.env_file)
            .args(["join", "--token-file", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run xp join");
        child.stdin.take().unwrap().write_all(token.as_bytes()).unwrap();
        child.wait_with_output().expect("xp join")
    }

    /// [`Node::xp_join`], which must succeed.
    pub fn join(&self, token: &str) {
        let out = self.xp_join(token);
        assert!(out.status.success(), "xp join failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Runs `xp-ops <args> --env-file <this node's env file>`.
    pub fn xp_ops(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin("xp-ops"))
            .args(args)
            .arg("--env-file")
            .arg(&self.env_file)
            .output()
            .expect("run xp-ops")
    }

    pub fn info(&self) -> Result<Value, String> {
        match get_json(&format!("{}/api/cluster/info", self.url()))? {
            (200, v) => Ok(v),
            (s, v) => Err(format!("{} answered {s}: {v}", self.name)),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster of nodes on `127.0.0.1:base_port+1..`, node 1 bootstrapping the first `voters`.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Node>,
}

impl Cluster {
    /// Writes env files for `n` nodes; the first `bootstrap` form the initial cluster.
    pub fn new(base_port: u16, n: usize, bootstrap: usize) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let members: Vec<String> = (1..=bootstrap)
            .map(|i| format!("{i}=node{i}@http://127.0.0.1:{}", base_port + i as u16))
            .collect();
        let nodes = (1..=n)
            .map(|i| {
                let port = base_port + i as u16;
                let data_dir = dir.path().join(format!("node{i}"));
                let env_file = dir.path().join(format!("node{i}.env"));
                let mut env = format!(
                    "XP_DATA_DIR={}\nXP_NODE_NAME=node{i}\nXP_API_BASE_URL=http://127.0.0.1:{port}\n\
                     XP_BIND=127.0.0.1:{port}\nXP_ADMIN_TOKEN={ADMIN_TOKEN}\nXP_CLUSTER_SECRET={CLUSTER_SECRET}\n",
                    data_dir.display()
                );
                if i <= bootstrap {
                    env.push_str(&format!("XP_NODE_ID={i}\n"));
                }
                if i == 1 && bootstrap > 0 {
                    env.push_str(&format!("XP_BOOTSTRAP_MEMBERS={}\n", members.join(",")));
                }
                std::fs::write(&env_file, env).unwrap();
                Node {
                    name: format!("node{i}"),
                    port,
                    env_file,
                    data_dir,
                    log_file: dir.path().join(format!("node{i}.log")),
                    child: None,
                }
            })
            .collect();
        Cluster { dir, nodes }
    }

    pub fn node(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i - 1]
    }

    /// Waits until the running nodes in `among` agree on one leader among them; returns its
    /// 1-based index.
    pub fn wait_leader(&self, among: &[usize], timeout: Duration) -> usize {
        wait_for("one leader that every listed node follows", timeout, || {
            let infos: Vec<Value> =
                among.iter().map(|i| self.nodes[i - 1].info()).collect::<Result<_, _>>()?;
            let leaders: Vec<usize> = among
                .iter()
                .zip(&infos)
                .filter(|(_, v)| v["role"] == "leader")
                .map(|(i, _)| *i)
                .collect();
            let [leader] = leaders[..] else {
                return Err(format!("leaders: {leaders:?}; infos: {infos:?}"));
            };
            let id = &infos[among.iter().position(|i| *i == leader).unwrap()]["node_id"];
            if infos.iter().all(|v| &v["leader_id"] == id) {
                Ok(leader)
            } else {
                Err(format!("not all follow {id}: {infos:?}"))
            }
        })
    }

    /// Starts nodes `1..=n`, waits for an agreed leader with a cluster id; returns its index.
    pub fn boot(&mut self, n: usize, timeout: Duration) -> usize {
        for i in 1..=n {
            self.node(i).start();
        }
        let all: Vec<usize> = (1..=n).collect();
        let leader = self.wait_leader(&all, timeout);
        let node = &self.nodes[leader - 1];
        wait_for("a cluster id", timeout, || {
            let v = node.info()?;
            if v["cluster_id"] != "" {
                Ok(())
            } else {
                Err(v.to_string())
            }
        });
        leader
    }

    pub fn dump_logs(&self) -> String {
        self.nodes.iter().map(|n| format!("=== {}\n{}", n.name, n.log())).collect()
    }
}

/// A KV request on `url`, following one 307 to the leader.
fn kv(method: &str, url: &str, key: &str, body: Option<&str>) -> Result<(u16, String), String> {
    let (status, headers, text) = http(method, &format!("{url}/api/kv/{key}"), body, &[])?;
    if status != 307 {
        return Ok((status, text));
    }
    let loc = headers
        .iter()
        .find(|(k, _)| k == "location")
        .map(|(_, v)| v.clone())
        .ok_or("no location")?;
    let (status, _, text) = http(method, &loc, body, &[])?;
    Ok((status, text))
}

/// `PUT /api/kv/{key}` on `url`, following one redirect to the leader.
pub fn kv_put(url: &str, key: &str, value: &str) -> Result<u64, String> {
    let body = serde_json::json!({ "value": value }).to_string();
    let (status, text) = kv("PUT", url, key, Some(&body))?;
    if status != 200 {
        return Err(format!("PUT {key}: {status} {text}"));
    }
    let w: xp_api::KvWritten =
        serde_json::from_str(&text).map_err(|e| format!("PUT {key}: {e}: {text}"))?;
    Ok(w.log_index)
}

/// `GET /api/kv/{key}` on `url`, following one redirect; `Ok(None)` for 404.
pub fn kv_get(url: &str, key: &str) -> Result<Option<String>, String> {
    let (status, text) = kv("GET", url, key, None)?;
    match status {
        200 => {
            let v: xp_api::KvValue =
                serde_json::from_str(&text).map_err(|e| format!("GET {key}: {e}: {text}"))?;
            Ok(Some(v.value))
        }
        404 => Ok(None),
        _ => Err(format!("GET {key}: {status} {text}")),
    }
}

/// Creates a join token on `url` with the test admin token.
pub fn join_token(url: &str, ttl: u64) -> Result<(String, u64), String> {
    join_token_replacing(url, ttl, None)
}

/// Creates a join token on `url` whose joiner takes the place of member `replaces`.
pub fn join_token_replacing(
    url: &str,
    ttl: u64,
    replaces: Option<u64>,
) -> Result<(String, u64), String> {
    let req = xp_api::TokenRequest { ttl_seconds: Some(ttl), replaces };
    let (status, _, text) = http(
        "POST",
        &format!("{url}/api/admin/cluster/join-tokens"),
        Some(&serde_json::to_string(&req).expect("serializes")),
        &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
    )?;
    if status != 200 {
        return Err(format!("join-tokens: {status} {text}"));
    }
    let t: xp_api::TokenResponse =
        serde_json::from_str(&text).map_err(|e| format!("join-tokens: {e}: {text}"))?;
    Ok((t.join_token, t.node_id))
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Keep the full logs where a developer can read them after the temp dir is gone.
            let keep =
                std::env::temp_dir().join("xp-test-logs").join(self.nodes[0].port.to_string());
            let _ = std::fs::create_dir_all(&keep);
            eprintln!("full node logs kept in {}", keep.display());
            for n in &self.nodes {
                let _ = std::fs::copy(&n.log_file, keep.join(format!("{}.log", n.name)));
                let log = n.log();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("=== last log lines of {}:", n.name);
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}
