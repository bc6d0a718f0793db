//! Data-driven tests: each case is an env file and the exact error (or a check of the result).

use super::*;

const BASE: &str =
    "XP_DATA_DIR=/var/lib/xp\nXP_NODE_NAME=node1\nXP_API_BASE_URL=http://node1:8080\n";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("xp.env"), text)
}

/// Asserts that `text` is rejected with exactly `expected`.
fn check_err(text: &str, expected: &str) {
    match parse(text) {
        Ok(c) => panic!("expected error {expected:?}, got {c:?}"),
        Err(e) => assert_eq!(e.to_string(), expected),
    }
}

#[test]
fn minimal_file_gets_defaults() {
    let c = parse(BASE).unwrap();
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/xp"));
    assert_eq!(c.raft_dir(), PathBuf::from("/var/lib/xp/raft"));
    assert_eq!(c.bind, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(c.raft, RaftTiming::default());
    assert_eq!(c.max_value_bytes, 1 << 20);
    assert!(c.admin_token.is_none());
}

#[test]
fn comments_quotes_export_and_trailing_slash() {
    let c = parse(
        "# xp\n\nexport XP_DATA_DIR=\"/data\"\nXP_NODE_NAME='n-1'\nXP_API_BASE_URL=http://127.0.0.1:7001/\n\
         XP_BIND=127.0.0.1:7001\nXP_ADMIN_TOKEN=0123456789abcdef\n",
    )
    .unwrap();
    assert_eq!(c.data_dir, PathBuf::from("/data"));
    assert_eq!(c.node_name, "n-1");
    assert_eq!(c.api_base_url, "http://127.0.0.1:7001");
    assert_eq!(c.admin_token.unwrap().expose(), "0123456789abcdef");
}

#[test]
fn secrets_never_show_in_debug() {
    let c = parse(&format!("{BASE}XP_ADMIN_TOKEN=supersecretvalue1\n")).unwrap();
    assert!(!format!("{c:?}").contains("supersecretvalue1"));
}

#[test]
fn bootstrap_members_parse() {
    let c = parse(&format!(
        "{BASE}XP_NODE_ID=1\nXP_BOOTSTRAP_MEMBERS=1=node1@http://node1:8080, 2=node2@http://node2:8080\n"
    ))
    .unwrap();
    assert_eq!(c.bootstrap_members.len(), 2);
    assert_eq!(
        c.bootstrap_members[1],
        Member { id: 2, name: "node2".into(), api_base_url: "http://node2:8080".into() }
    );
}

#[test]
fn rejections() {
    let cases: &[(&str, &str)] = &[
        ("", "xp.env: XP_DATA_DIR is required (directory holding this node's state; Raft state lives in ${XP_DATA_DIR}/raft)"),
        ("XP_DATA_DIR\n", "xp.env:1: expected KEY=VALUE"),
        ("XP_DATADIR=/x\n", "xp.env:1: unknown key XP_DATADIR; known keys: XP_DATA_DIR, XP_NODE_NAME, XP_API_BASE_URL, XP_BIND, XP_ADMIN_TOKEN, XP_CLUSTER_SECRET, XP_NODE_ID, XP_BOOTSTRAP_MEMBERS, XP_RAFT_HEARTBEAT_MS, XP_RAFT_ELECTION_MIN_MS, XP_RAFT_ELECTION_MAX_MS, XP_RAFT_SNAPSHOT_LOGS, XP_MAX_VALUE_BYTES, XP_TLS_CERT, XP_TLS_KEY, XP_TLS_CA, RUST_LOG"),
        ("XP_DATA_DIR=/a\nXP_DATA_DIR=/b\n", "xp.env:2: XP_DATA_DIR is set twice (first on line 1)"),
        ("XP_DATA_DIR=\"/a\n", "xp.env:1: unbalanced quotes in the value of XP_DATA_DIR"),
        ("XP_DATA_DIR=relative\n", "xp.env:1: invalid XP_DATA_DIR: \"relative\" is not an absolute path"),
        ("XP_DATA_DIR=\n", "xp.env:1: invalid XP_DATA_DIR: must not be empty"),
        ("XP_DATA_DIR=/a\nXP_NODE_NAME=a b\n", "xp.env:2: invalid XP_NODE_NAME: \"a b\" may only hold letters, digits, '-', '_' and '.'"),
        ("XP_DATA_DIR=/a\nXP_NODE_NAME=n\nXP_API_BASE_URL=https://x\n", "xp.env:3: invalid XP_API_BASE_URL: \"https://x\" must start with http:// (set XP_TLS_CERT, XP_TLS_KEY and XP_TLS_CA for https://)"),
        ("XP_DATA_DIR=/a\nXP_NODE_NAME=n\nXP_API_BASE_URL=http://x:99999\n", "xp.env:3: invalid XP_API_BASE_URL: \"http://x:99999\" has an invalid port \"99999\""),
        ("XP_DATA_DIR=/a\nXP_NODE_NAME=n\nXP_API_BASE_URL=http://x:1/api\n", "xp.env:3: invalid XP_API_BASE_URL: \"http://x:1/api\" must not have a path"),
    ];
    for (text, expected) in cases {
        check_err(text, expected);
    }
}

#[test]
fn rejections_after_base() {
    let cases: &[(&str, &str)] = &[
        ("XP_BIND=localhost\n", "xp.env:4: invalid XP_BIND: \"localhost\" is not an address like 0.0.0.0:8080"),
        ("XP_ADMIN_TOKEN=short\n", "xp.env:4: invalid XP_ADMIN_TOKEN: must be at least 16 printable characters long, not counting spaces (has 5)"),
        ("XP_RAFT_HEARTBEAT_MS=fast\n", "xp.env:4: invalid XP_RAFT_HEARTBEAT_MS: \"fast\" is not a whole number in 10..=60000"),
        ("XP_RAFT_ELECTION_MIN_MS=40\n", "xp.env: Raft timing must satisfy XP_RAFT_HEARTBEAT_MS < XP_RAFT_ELECTION_MIN_MS < XP_RAFT_ELECTION_MAX_MS, got 50 < 40 < 300"),
        ("XP_BOOTSTRAP_MEMBERS=1=node1@http://node1:8080\n", "xp.env: XP_BOOTSTRAP_MEMBERS needs XP_NODE_ID (this node's id among them)"),
        ("XP_NODE_ID=2\nXP_BOOTSTRAP_MEMBERS=1=node1@http://node1:8080\n", "xp.env: XP_BOOTSTRAP_MEMBERS must list this node as 2=node1@http://node1:8080"),
        ("XP_NODE_ID=1\nXP_BOOTSTRAP_MEMBERS=1=node1\n", "xp.env:5: invalid XP_BOOTSTRAP_MEMBERS: \"1=node1\" is not id=name@http://host:port"),
        ("XP_MAX_VALUE_BYTES=0\n", "xp.env:4: invalid XP_MAX_VALUE_BYTES: \"0\" is not a whole number in 1..=8388608"),
        ("XP_MAX_VALUE_BYTES=16MiB\n", "xp.env:4: invalid XP_MAX_VALUE_BYTES: \"16MiB\" is not a whole number in 1..=8388608"),
        ("XP_NODE_ID=0\n", "xp.env:4: invalid XP_NODE_ID: \"0\" is not a whole number in 1..=9007199254740991"),
    ];
    for (text, expected) in cases {
        check_err(&format!("{BASE}{text}"), expected);
    }
}

#[test]
fn max_value_bytes_is_read() {
    assert_eq!(parse(&format!("{BASE}XP_MAX_VALUE_BYTES=65536\n")).unwrap().max_value_bytes, 65536);
}

#[test]
fn missing_file_names_the_path_and_the_flag() {
    let e = Config::load(Path::new("/nonexistent/xp.env")).unwrap_err().to_string();
    assert!(e.starts_with("cannot read env file /nonexistent/xp.env: "), "{e}");
    assert!(e.ends_with("(pass --env-file PATH to use another file)"), "{e}");
}

/// What a hand-edited (or Windows-edited) env file holds must read the way its author meant.
#[test]
fn comments_bom_and_crlf_read_as_meant() {
    // (text after BASE, the admin token it must give)
    let cases = [
        ("XP_ADMIN_TOKEN=0123456789abcdef # rotated 2026-11\n", "0123456789abcdef"),
        ("XP_ADMIN_TOKEN=0123456789abcdef\t# tab before the comment\n", "0123456789abcdef"),
        (
            "XP_ADMIN_TOKEN=\"0123456789abcdef # inside quotes\"\n",
            "0123456789abcdef # inside quotes",
        ),
        (
            "XP_ADMIN_TOKEN=0123456789abcdef#no-space-is-part-of-it\n",
            "0123456789abcdef#no-space-is-part-of-it",
        ),
        ("XP_ADMIN_TOKEN=0123456789abcdef\r\n", "0123456789abcdef"),
        ("XP_ADMIN_TOKEN=\"0123456789abcdef\" # quoted, then a comment\n", "0123456789abcdef"),
        ("XP_ADMIN_TOKEN='0123456789abcdef'\n", "0123456789abcdef"),
    ];
    for (tail, want) in cases {
        let c = parse(&format!("{BASE}{tail}")).unwrap_or_else(|e| panic!("{tail:?}: {e}"));
        assert_eq!(c.admin_token.unwrap().expose(), want, "{tail:?}");
    }
    let c = parse(&format!("\u{feff}{}", BASE.replace('\n', "\r\n"))).unwrap();
    assert_eq!(c.node_name, "node1");
}

#[test]
fn weak_secrets_are_refused_naming_file_line_and_key() {
    let cases = [
        ("XP_ADMIN_TOKEN=\"                \"\n", "XP_ADMIN_TOKEN", "is blank"),
        ("XP_CLUSTER_SECRET=\"  short  secret  \"\n", "XP_CLUSTER_SECRET", "at least 16"),
        ("XP_CLUSTER_SECRET=aaaaaaaaaaaaaaaaaaaa\n", "XP_CLUSTER_SECRET", "repeats one character"),
        ("XP_ADMIN_TOKEN=0123456789 # abcdef\n", "XP_ADMIN_TOKEN", "at least 16"),
        ("XP_ADMIN_TOKEN=abababababababab\n", "XP_ADMIN_TOKEN", "only 2 different characters"),
        ("XP_ADMIN_TOKEN=changeme-changeme\n", "XP_ADMIN_TOKEN", "only 8 different characters"),
        ("XP_ADMIN_TOKEN=\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}x\n", "XP_ADMIN_TOKEN", "at least 16"),
    ];
    // Text after a quoted value that is not a comment is an error too.
    let e = parse(&format!("{BASE}XP_ADMIN_TOKEN=\"0123456789abcdef\" trailing\n")).unwrap_err();
    assert!(
        e.to_string().starts_with("xp.env:4: ") && e.to_string().contains("XP_ADMIN_TOKEN"),
        "{e}"
    );
    for (tail, key, why) in cases {
        let e = parse(&format!("{BASE}{tail}")).unwrap_err().to_string();
        assert!(e.starts_with(&format!("xp.env:4: invalid {key}: ")), "{tail:?}: {e}");
        assert!(e.contains(why), "{tail:?}: {e}");
    }
}

#[test]
fn tls_keys_come_together_and_set_the_scheme() {
    let tls = "XP_TLS_CERT=/tls/n.pem\nXP_TLS_KEY=/tls/n.key\nXP_TLS_CA=/tls/ca.pem\n";
    let https = BASE.replace("http://node1", "https://node1");
    let c = parse(&format!("{https}{tls}")).unwrap();
    assert_eq!(c.tls.unwrap().ca, PathBuf::from("/tls/ca.pem"));
    assert_eq!(c.bind.port(), 8080);
    let cases = [
        (format!("{BASE}{tls}"), "xp.env:3: invalid XP_API_BASE_URL: \"http://node1:8080\" must start with https:// (XP_TLS_* are set)"),
        (https.clone(), "xp.env:3: invalid XP_API_BASE_URL: \"https://node1:8080\" must start with http:// (set XP_TLS_CERT, XP_TLS_KEY and XP_TLS_CA for https://)"),
        (format!("{https}XP_TLS_CERT=/tls/n.pem\n"), "xp.env: XP_TLS_CERT, XP_TLS_KEY and XP_TLS_CA go together: set all three (TLS on) or none (plain HTTP)"),
        (format!("{https}{}", tls.replace("/tls/n.key", "n.key")), "xp.env:5: invalid XP_TLS_KEY: \"n.key\" is not an absolute path"),
        (format!("{https}{tls}XP_NODE_ID=1\nXP_BOOTSTRAP_MEMBERS=1=node1@https://node1:8080,2=node2@http://node2:8080\n"), "xp.env:8: invalid XP_BOOTSTRAP_MEMBERS: http://node2:8080 must start with https:// like XP_API_BASE_URL"),
    ];
    for (text, want) in cases {
        check_err(&text, want);
    }
}
