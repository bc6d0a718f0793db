//! The xp env file (`/etc/xp/xp.env`): parsing, validation and typed access.
//!
//! The node (`xp`) and the operator tool (`xp-ops`) read the same file through this crate, so a
//! key means the same thing to both. Parsing is strict: an unknown key, a duplicate or a bad
//! value is an error that names the file, the line and the key, because a typo in this file is
//! how a node ends up pointing at the wrong data dir.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the node and `xp-ops` look for the env file unless `--env-file` says otherwise.
pub const DEFAULT_ENV_FILE: &str = "/etc/xp/xp.env";

/// Every key the env file may hold, with a one-line meaning (used in error messages and docs).
pub const KEYS: &[(&str, &str)] = &[
    ("XP_DATA_DIR", "directory holding this node's state; Raft state lives in ${XP_DATA_DIR}/raft"),
    ("XP_NODE_NAME", "human name of this node, e.g. node1"),
    ("XP_API_BASE_URL", "URL peers and clients use to reach this node, e.g. http://node1:8080"),
    ("XP_BIND", "address the HTTP server listens on (default 0.0.0.0:<port of XP_API_BASE_URL>)"),
    ("XP_ADMIN_TOKEN", "bearer token for /api/admin/* (at least 16 characters)"),
    ("XP_CLUSTER_SECRET", "secret shared by the cluster's members (at least 16 characters)"),
    ("XP_NODE_ID", "Raft node id of this node when it is one of the bootstrap members"),
    ("XP_BOOTSTRAP_MEMBERS", "set on one node only: initial members as id=name@url,..."),
    ("XP_RAFT_HEARTBEAT_MS", "leader heartbeat interval in ms (default 50)"),
    ("XP_RAFT_ELECTION_MIN_MS", "minimum election timeout in ms (default 150)"),
    ("XP_RAFT_ELECTION_MAX_MS", "maximum election timeout in ms (default 300)"),
    ("XP_RAFT_SNAPSHOT_LOGS", "build a snapshot every this many applied entries (default 1000)"),
    (
        "XP_MAX_VALUE_BYTES",
        "largest KV value accepted, in bytes (default 1048576, at most 8388608)",
    ),
    ("XP_TLS_CERT", "PEM certificate of this node, signed by XP_TLS_CA (turns on HTTPS and mTLS)"),
    ("XP_TLS_KEY", "PEM private key of XP_TLS_CERT (owner-only file)"),
    (
        "XP_TLS_CA",
        "PEM certificate of the cluster CA: peers, operators and clients are checked against it",
    ),
    ("RUST_LOG", "log filter, e.g. info or xp=debug"),
];

/// The TLS files (`XP_TLS_CERT`, `XP_TLS_KEY`, `XP_TLS_CA`): all three or none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// An error in the env file. Each variant names the file and, where there is one, the line
/// and the key; none of them ever carries a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("cannot read env file {path}: {source} (pass --env-file PATH to use another file)")]
    Read { path: PathBuf, source: std::io::Error },
    /// A line is not `KEY=VALUE`, a comment or blank.
    #[error("{path}:{line}: {message}")]
    Syntax { path: PathBuf, line: usize, message: String },
    /// A key this version does not know.
    #[error("{path}:{line}: unknown key {key}; known keys: {known}")]
    UnknownKey { path: PathBuf, line: usize, key: String, known: String },
    /// The same key twice.
    #[error("{path}:{line}: {key} is set twice (first on line {first})")]
    Duplicate { path: PathBuf, line: usize, key: String, first: usize },
    /// A value that does not parse or is out of range.
    #[error("{path}:{line}: invalid {key}: {why}")]
    Invalid { path: PathBuf, line: usize, key: &'static str, why: String },
    /// A key that this command needs is absent.
    #[error("{path}: {key} is required ({meaning})")]
    Missing { path: PathBuf, key: &'static str, meaning: &'static str },
    /// Keys that are each valid but disagree.
    #[error("{path}: {message}")]
    Inconsistent { path: PathBuf, message: String },
}

/// One initial member of a bootstrapped cluster (`XP_BOOTSTRAP_MEMBERS`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub name: String,
    pub api_base_url: String,
}

/// A secret value: printed as `***` so it cannot leak through `Debug` into a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    /// The secret itself; call sites are few and greppable.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Default of `XP_MAX_VALUE_BYTES`: 1 MiB.
pub const DEFAULT_MAX_VALUE_BYTES: u64 = 1 << 20;
/// The largest `XP_MAX_VALUE_BYTES` accepted: 8 MiB. The node sizes its Raft RPC body limit for
/// one entry holding a value this large, whatever any member's cap is, so members may differ
/// (or lower their cap later) without a follower ever refusing an entry the leader accepted.
pub const MAX_VALUE_BYTES_CEILING: u64 = 8 << 20;

/// Raft timing, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    pub snapshot_logs: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            heartbeat_ms: 50,
            election_min_ms: 150,
            election_max_ms: 300,
            snapshot_logs: 1000,
        }
    }
}

/// A parsed env file.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file this came from, for error messages.
    pub path: PathBuf,
    pub data_dir: PathBuf,
    pub node_name: String,
    pub api_base_url: String,
    pub bind: SocketAddr,
    pub admin_token: Option<Secret>,
    pub cluster_secret: Option<Secret>,
    pub node_id: Option<u64>,
    pub bootstrap_members: Vec<Member>,
    pub raft: RaftTiming,
    /// Largest KV value (its UTF-8 bytes) a PUT may carry (`XP_MAX_VALUE_BYTES`).
    pub max_value_bytes: u64,
    /// Set: the node serves HTTPS and requires client certificates on Raft and admin routes;
    /// every URL is `https://`.
    pub tls: Option<TlsFiles>,
    pub rust_log: Option<String>,
}

impl Config {
    /// Reads and validates an env file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Config::parse(path, &text)
    }

    /// Validates env-file text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let entries = parse_lines(path, text)?;
        let p = || path.to_owned();
        let get = |key: &str| entries.get(key).map(|(line, v)| (*line, v.as_str()));
        let required = |key: &'static str| -> Result<(usize, &str), ConfigError> {
            match get(key) {
                Some((line, v)) if !v.is_empty() => Ok((line, v)),
                Some((line, _)) => Err(ConfigError::Invalid {
                    path: p(),
                    line,
                    key,
                    why: "must not be empty".into(),
                }),
                None => Err(ConfigError::Missing { path: p(), key, meaning: meaning(key) }),
            }
        };
        let invalid = |line: usize, key: &'static str, why: String| ConfigError::Invalid {
            path: p(),
            line,
            key,
            why,
        };

        let (line, dir) = required("XP_DATA_DIR")?;
        if !dir.starts_with('/') {
            return Err(invalid(line, "XP_DATA_DIR", format!("{dir:?} is not an absolute path")));
        }
        if Path::new(dir).parent().is_none() {
            return Err(invalid(
                line,
                "XP_DATA_DIR",
                "\"/\" is the root directory; give the node a directory of its own".into(),
            ));
        }
        let data_dir = PathBuf::from(dir);

        let (line, node_name) = required("XP_NODE_NAME")?;
        if !node_name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(invalid(
                line,
                "XP_NODE_NAME",
                format!("{node_name:?} may only hold letters, digits, '-', '_' and '.'"),
            ));
        }

        let (line, url) = required("XP_API_BASE_URL")?;
        let port = check_url(url).map_err(|why| invalid(line, "XP_API_BASE_URL", why))?;
        let api_base_url = url.trim_end_matches('/').to_owned();

        let tls = match (get("XP_TLS_CERT"), get("XP_TLS_KEY"), get("XP_TLS_CA")) {
            (None, None, None) => None,
            (Some(cert), Some(key), Some(ca)) => {
                let file = |(line, v): (usize, &str), key: &'static str| {
                    if v.starts_with('/') {
                        Ok(PathBuf::from(v))
                    } else {
                        Err(invalid(line, key, format!("{v:?} is not an absolute path")))
                    }
                };
                Some(TlsFiles {
                    cert: file(cert, "XP_TLS_CERT")?,
                    key: file(key, "XP_TLS_KEY")?,
                    ca: file(ca, "XP_TLS_CA")?,
                })
            }
            _ => {
                return Err(ConfigError::Inconsistent {
                    path: p(),
                    message: "XP_TLS_CERT, XP_TLS_KEY and XP_TLS_CA go together: set all three \
                              (TLS on) or none (plain HTTP)"
                        .into(),
                })
            }
        };
        let scheme = if tls.is_some() { "https://" } else { "http://" };
        if !url.starts_with(scheme) {
            let why = match tls {
                Some(_) => "must start with https:// (XP_TLS_* are set)",
                None => "must start with http:// (set XP_TLS_CERT, XP_TLS_KEY and XP_TLS_CA for https://)",
            };
            return Err(invalid(line, "XP_API_BASE_URL", format!("{url:?} {why}")));
        }

        let bind = match get("XP_BIND") {
            Some((line, v)) => v.parse::<SocketAddr>().map_err(|_| {
                invalid(line, "XP_BIND", format!("{v:?} is not an address like 0.0.0.0:8080"))
            })?,
            None => SocketAddr::from(([0, 0, 0, 0], port)),
        };

        let secret = |key: &'static str| -> Result<Option<Secret>, ConfigError> {
            match get(key) {
                Some((line, v)) => {
                    check_secret(v).map_err(|why| invalid(line, key, why))?;
                    Ok(Some(Secret::new(v)))
                }
                None => Ok(None),
            }
        };
        let admin_token = secret("XP_ADMIN_TOKEN")?;
        let cluster_secret = secret("XP_CLUSTER_SECRET")?;

        let number = |key: &'static str, min: u64, max: u64| -> Result<Option<u64>, ConfigError> {
            match get(key) {
                None => Ok(None),
                Some((line, v)) => match v.parse::<u64>() {
                    Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
                    _ => Err(invalid(
                        line,
                        key,
                        format!("{v:?} is not a whole number in {min}..={max}"),
                    )),
                },
            }
        };
        // 2^53 - 1: the largest id every JSON client reads exactly (xp_store::MAX_NODE_ID).
        let node_id = number("XP_NODE_ID", 1, (1 << 53) - 1)?;
        let d = RaftTiming::default();
        let raft = RaftTiming {
            heartbeat_ms: number("XP_RAFT_HEARTBEAT_MS", 10, 60_000)?.unwrap_or(d.heartbeat_ms),
            election_min_ms: number("XP_RAFT_ELECTION_MIN_MS", 20, 600_000)?
                .unwrap_or(d.election_min_ms),
            election_max_ms: number("XP_RAFT_ELECTION_MAX_MS", 21, 600_000)?
                .unwrap_or(d.election_max_ms),
            snapshot_logs: number("XP_RAFT_SNAPSHOT_LOGS", 2, 10_000_000)?
                .unwrap_or(d.snapshot_logs),
        };
        if raft.heartbeat_ms >= raft.election_min_ms || raft.election_min_ms >= raft.election_max_ms
        {
            return Err(ConfigError::Inconsistent {
                path: p(),
                message: format!(
                    "Raft timing must satisfy XP_RAFT_HEARTBEAT_MS < XP_RAFT_ELECTION_MIN_MS < \
                     XP_RAFT_ELECTION_MAX_MS, got {} < {} < {}",
                    raft.heartbeat_ms, raft.election_min_ms, raft.election_max_ms
                ),
            });
        }

        let max_value_bytes = number("XP_MAX_VALUE_BYTES", 1, MAX_VALUE_BYTES_CEILING)?
            .unwrap_or(DEFAULT_MAX_VALUE_BYTES);

        let bootstrap_members = match get("XP_BOOTSTRAP_MEMBERS") {
            None => Vec::new(),
            Some((line, v)) => {
                let members =
                    parse_members(v).map_err(|why| invalid(line, "XP_BOOTSTRAP_MEMBERS", why))?;
                if let Some(m) = members.iter().find(|m| !m.api_base_url.starts_with(scheme)) {
                    return Err(invalid(
                        line,
                        "XP_BOOTSTRAP_MEMBERS",
                        format!("{} must start with {scheme} like XP_API_BASE_URL", m.api_base_url),
                    ));
                }
                members
            }
        };
        if !bootstrap_members.is_empty() {
            let Some(id) = node_id else {
                return Err(ConfigError::Inconsistent {
                    path: p(),
                    message: "XP_BOOTSTRAP_MEMBERS needs XP_NODE_ID (this node's id among them)"
                        .into(),
                });
            };
            match bootstrap_members.iter().find(|m| m.id == id) {
                Some(m) if m.name == node_name && m.api_base_url == api_base_url => {}
                _ => {
                    return Err(ConfigError::Inconsistent {
                        path: p(),
                        message: format!(
                            "XP_BOOTSTRAP_MEMBERS must list this node as {id}={node_name}@{api_base_url}"
                        ),
                    })
                }
            }
        }

        Ok(Config {
            path: path.to_owned(),
            data_dir,
            node_name: node_name.to_owned(),
            api_base_url,
            bind,
            admin_token,
            cluster_secret,
            node_id,
            bootstrap_members,
            raft,
            max_value_bytes,
            tls,
            rust_log: get("RUST_LOG").map(|(_, v)| v.to_owned()),
        })
    }

    /// `${XP_DATA_DIR}/raft`: the directory the Raft store owns.
    pub fn raft_dir(&self) -> PathBuf {
        self.data_dir.join("raft")
    }

    /// The cluster secret, or an error saying this command needs it.
    pub fn require_cluster_secret(&self) -> Result<&Secret, ConfigError> {
        self.cluster_secret.as_ref().ok_or_else(|| ConfigError::Missing {
            path: self.path.clone(),
            key: "XP_CLUSTER_SECRET",
            meaning: meaning("XP_CLUSTER_SECRET"),
        })
    }

    /// The admin token, or an error saying this command needs it.
    pub fn require_admin_token(&self) -> Result<&Secret, ConfigError> {
        self.admin_token.as_ref().ok_or_else(|| ConfigError::Missing {
            path: self.path.clone(),
            key: "XP_ADMIN_TOKEN",
            meaning: meaning("XP_ADMIN_TOKEN"),
        })
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.raft.heartbeat_ms)
    }
}

fn meaning(key: &str) -> &'static str {
    KEYS.iter().find(|(k, _)| *k == key).map(|(_, m)| *m).unwrap_or("")
}

/// Splits the file into `KEY -> (line, value)`, rejecting unknown and duplicate keys.
fn parse_lines(path: &Path, text: &str) -> Result<BTreeMap<String, (usize, String)>, ConfigError> {
    let mut out: BTreeMap<String, (usize, String)> = BTreeMap::new();
    // A byte-order mark (editors on Windows write one) is not part of the first key.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // `lines` also ends a line at `\r\n`; `trim` drops a stray `\r`.
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let s = raw.trim();
        if s.is_empty() || s.starts_with('#') {
            continue;
        }
        let s = s.strip_prefix("export ").unwrap_or(s);
        let Some((key, value)) = s.split_once('=') else {
            return Err(ConfigError::Syntax {
                path: path.to_owned(),
                line,
                message: "expected KEY=VALUE".into(),
            });
        };
        let key = key.trim();
        if !KEYS.iter().any(|(k, _)| *k == key) {
            return Err(ConfigError::UnknownKey {
                path: path.to_owned(),
                line,
                key: key.to_owned(),
                known: KEYS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", "),
            });
        }
        let value = unquote(strip_comment(value.trim())).ok_or_else(|| ConfigError::Syntax {
            path: path.to_owned(),
            line,
            message: format!("unbalanced quotes in the value of {key}"),
        })?;
        if let Some((first, _)) = out.get(key) {
            return Err(ConfigError::Duplicate {
                path: path.to_owned(),
                line,
                key: key.to_owned(),
                first: *first,
            });
        }
        out.insert(key.to_owned(), (line, value));
    }
    Ok(out)
}

/// Cuts a ` # comment` after an unquoted value (as shells and dotenv read it); a `#` with no
/// whitespace before it, or inside quotes, is part of the value.
fn strip_comment(v: &str) -> &str {
    if let Some(q) = v.chars().next().filter(|c| *c == '"' || *c == '\'') {
        // A quoted value ends at its closing quote; only a ` # comment` may follow it.
        return match v[1..].find(q) {
            Some(end) => {
                let (quoted, rest) = v.split_at(end + 2);
                match rest.trim_start() {
                    r if r.is_empty() || (r.starts_with('#') && rest != r) => quoted,
                    _ => v,
                }
            }
            None => v,
        };
    }
    let cut = v.char_indices().find(|&(i, c)| c == '#' && v[..i].ends_with(char::is_whitespace));
    match cut {
        Some((i, _)) => v[..i].trim_end(),
        None => v,
    }
}

fn unquote(v: &str) -> Option<String> {
    for q in ['"', '\''] {
        if let Some(rest) = v.strip_prefix(q) {
            return rest.strip_suffix(q).map(str::to_owned);
        }
        if v.ends_with(q) {
            return None;
        }
    }
    Some(v.to_owned())
}

/// Refuses a secret that is blank, short, or one character repeated: each is a placeholder or
/// a slip (a comment or quotes eaten into the value), never a key worth trusting.
fn check_secret(v: &str) -> Result<(), String> {
    if v.trim().is_empty() {
        return Err("is blank; set a random value of at least 16 characters \
                    (e.g. `openssl rand -hex 24`)"
            .into());
    }
    // Printable ASCII only: zero-width and other invisible characters do not count.
    let meaningful = v.chars().filter(|c| c.is_ascii_graphic()).count();
    if meaningful < 16 {
        return Err(format!(
            "must be at least 16 printable characters long, not counting spaces (has {meaningful})"
        ));
    }
    let distinct =
        v.chars().filter(|c| c.is_ascii_graphic()).collect::<std::collections::BTreeSet<_>>();
    if distinct.len() == 1 {
        return Err("repeats one character; set a random value".into());
    }
    if distinct.len() < 10 {
        return Err(format!(
            "uses only {} different characters (a pattern such as abab... or changeme-changeme); \
             set a random value",
            distinct.len()
        ));
    }
    Ok(())
}

/// Checks an `http(s)://host:port` URL and returns its port.
fn check_url(url: &str) -> Result<u16, String> {
    let (rest, default_port) = match url.strip_prefix("https://") {
        Some(rest) => (rest, 443),
        None => (
            url.strip_prefix("http://")
                .ok_or_else(|| format!("{url:?} must start with http:// or https://"))?,
            80,
        ),
    };
    let authority = rest.trim_end_matches('/');
    if authority.contains('/') {
        return Err(format!("{url:?} must not have a path"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => {
            (h, p.parse::<u16>().map_err(|_| format!("{url:?} has an invalid port {p:?}"))?)
        }
        None => (authority, default_port),
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let v6 = host.starts_with('[') && host.ends_with(']');
    if !v6 && !host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') {
        return Err(format!(
            "{url:?} has an invalid host {host:?} (letters, digits, '.', '-', or [IPv6])"
        ));
    }
    Ok(port)
}

fn parse_members(v: &str) -> Result<Vec<Member>, String> {
    let mut members: Vec<Member> = Vec::new();
    for part in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let err = || format!("{part:?} is not id=name@http://host:port");
        let (id, rest) = part.split_once('=').ok_or_else(err)?;
        let (name, url) = rest.split_once('@').ok_or_else(err)?;
        let id: u64 = id.trim().parse().map_err(|_| err())?;
        check_url(url).map_err(|e| format!("{part:?}: {e}"))?;
        if members.iter().any(|m| m.id == id) {
            return Err(format!("node id {id} is listed twice"));
        }
        members.push(Member {
            id,
            name: name.trim().to_owned(),
            api_base_url: url.trim_end_matches('/').to_owned(),
        });
    }
    if members.is_empty() {
        return Err("lists no member".into());
    }
    Ok(members)
}

#[cfg(test)]
mod tests;
