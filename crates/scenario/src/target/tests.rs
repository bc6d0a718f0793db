use serde_json::{json, Value};

use super::spec::TargetSpec;
use super::state::{document, map, Member, NodeStatus, Role};

fn spec(text: &str) -> TargetSpec {
    #[derive(serde::Deserialize)]
    struct P {
        target: TargetSpec,
    }
    let p: P = toml::from_str(text).unwrap();
    p.target.check().unwrap();
    p.target
}

/// The profiles' own `[target]` sections, read from the shipped files.
fn shipped(profile: &str) -> TargetSpec {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../compose");
    let text = std::fs::read_to_string(root.join(format!("{profile}.profile.toml"))).unwrap();
    let start = text.find("\n[target").unwrap() + 1;
    let end = text[start..]
        .find("\n[tls]")
        .or_else(|| text[start..].find("\n[join]"))
        .map(|e| start + e)
        .unwrap_or(text.len());
    // Everything from the first [target.*] table to the next non-target table.
    let mut body = String::new();
    let mut inside = false;
    for line in text[start..end].lines() {
        if line.starts_with('[') {
            inside = line.starts_with("[target]") || line.starts_with("[target.");
        }
        if inside {
            body.push_str(line);
            body.push('\n');
        }
    }
    spec(&body)
}

fn status(
    node_id: Option<&str>,
    role: Role,
    term: u64,
    leader_id: Option<&str>,
    voters: &[&str],
) -> NodeStatus {
    NodeStatus {
        node_id: node_id.map(str::to_owned),
        name: None,
        role,
        term,
        leader_id: leader_id.map(str::to_owned),
        log_index: None,
        applied_index: None,
        cluster_id: None,
        voters: voters.iter().map(|s| s.to_string()).collect(),
        learners: vec![],
        health: None,
        url: None,
        leader_url: None,
        members: vec![],
    }
}

#[test]
fn xp_info_maps_to_a_node_state() {
    let spec = shipped("xp-3");
    let info = json!({
        "node_id": 2, "node_name": "node2", "role": "follower", "term": 7, "leader_id": 1,
        "last_log_index": 40, "last_applied_index": 39, "cluster_id": "c-1",
        "voters": [1, 2, 3], "learners": [4], "health": "ok",
        "api_base_url": "http://node2:8080", "leader_api_base_url": "http://node1:8080",
        "members": [
            {"node_id": 1, "node_name": "node1", "api_base_url": "http://node1:8080"},
            {"node_id": 4, "node_name": "node4", "api_base_url": "http://node4:8080"}
        ]
    });
    let sources = json!({ "info": info });
    let got = map(&spec, &sources);
    let want = NodeStatus {
        name: Some("node2".into()),
        log_index: Some(40),
        applied_index: Some(39),
        cluster_id: Some("c-1".into()),
        learners: vec!["4".into()],
        health: Some("ok".into()),
        url: Some("http://node2:8080".into()),
        leader_url: Some("http://node1:8080".into()),
        members: vec![
            Member {
                id: "1".into(),
                name: Some("node1".into()),
                url: Some("http://node1:8080".into()),
                learner: false,
            },
            Member {
                id: "4".into(),
                name: Some("node4".into()),
                url: Some("http://node4:8080".into()),
                learner: false,
            },
        ],
        ..status(Some("2"), Role::Follower, 7, Some("1"), &["1", "2", "3"])
    };
    assert_eq!(got, want);
    // `expect` keeps xp's own spelling and types (numbers stay numbers) beside the runner's.
    let doc = document(&spec, &got, &sources);
    assert_eq!(doc["voters"], json!([1, 2, 3]));
    assert_eq!(doc["last_applied_index"], json!(39));
    assert_eq!(doc["applied_index"], json!(39));
    assert_eq!(doc["info"]["term"], json!(7));
}

#[test]
fn etcd_status_and_members_map_to_a_node_state() {
    let spec = shipped("etcd-3");
    let me = "10276657743932975437";
    let other = "9372538179322589801";
    // As `etcdctl member list -w json` prints it: ids are JSON numbers (the gateway's status
    // has them as strings), and a learner not started yet has no name.
    let members = json!({"members": [
        {"ID": 10276657743932975437u64, "name": "node1", "peerURLs": ["http://node1:2380"], "clientURLs": ["http://node1:2379"]},
        {"ID": 9372538179322589801u64, "name": "node2", "peerURLs": ["http://node2:2380"], "clientURLs": ["http://node2:2379"]},
        {"ID": 77, "peerURLs": ["http://node3:2380"], "isLearner": true}
    ]});
    // (leader field of the status, the role the runner derives)
    let cases: &[(Option<&str>, Role)] =
        &[(Some(me), Role::Leader), (Some(other), Role::Follower), (None, Role::Candidate)];
    for (leader, want_role) in cases {
        let mut status = json!({
            "header": {"cluster_id": "14841639068965178418", "member_id": me},
            "raftTerm": "5", "raftIndex": "120", "raftAppliedIndex": "119"
        });
        if let Some(l) = leader {
            status["leader"] = json!(l);
        }
        let sources = json!({ "status": status, "cluster": members });
        let got = map(&spec, &sources);
        assert_eq!(&got.role, want_role, "leader {leader:?}");
        assert_eq!(got.node_id.as_deref(), Some(me));
        assert_eq!(got.name.as_deref(), Some("node1"), "from its member entry");
        assert_eq!(got.term, 5);
        assert_eq!(got.log_index, Some(120));
        assert_eq!(got.applied_index, Some(119));
        assert_eq!(got.cluster_id.as_deref(), Some("14841639068965178418"));
        assert_eq!(got.voters, vec![me.to_owned(), other.to_owned()]);
        assert_eq!(got.learners, vec!["77".to_owned()]);
        assert_eq!(got.url.as_deref(), Some("http://node1:2379"));
        let leader_url =
            leader.map(|l| if l == me { "http://node1:2379" } else { "http://node2:2379" });
        assert_eq!(got.leader_url.as_deref(), leader_url);
        let doc = document(&spec, &got, &sources);
        assert_eq!(doc["role"], json!(want_role.as_str()));
        assert_eq!(doc["voters"], json!([me, other]));
        assert_eq!(doc["raftTerm"], json!("5"), "the primary source's fields are at the top");
    }
}

/// An etcd learner refuses the member list: its state is read from its status alone.
#[test]
fn an_etcd_learner_without_its_member_list_is_a_learner() {
    let spec = shipped("etcd-3");
    let status = json!({
        "header": {"cluster_id": "1", "member_id": "42"},
        "leader": "7", "raftTerm": "3", "raftIndex": "10", "raftAppliedIndex": "10",
        "isLearner": true
    });
    let got = map(&spec, &json!({ "status": status }));
    assert_eq!(got.role, Role::Learner);
    assert_eq!(got.leader_id.as_deref(), Some("7"));
    assert!(got.voters.is_empty(), "no member list, no voters: {:?}", got.voters);
}

#[test]
fn a_missing_or_odd_answer_maps_to_nothing_rather_than_a_panic() {
    let spec = shipped("etcd-3");
    for sources in [json!({}), json!({"status": 1, "cluster": "x"}), Value::Null] {
        let got = map(&spec, &sources);
        assert_eq!(got.role, Role::Candidate);
        assert_eq!(got.term, 0);
        assert!(got.voters.is_empty());
        let _ = document(&spec, &got, &sources);
    }
}

#[test]
fn kv_bodies_fill_placeholders_and_encode() {
    let cases: &[(super::spec::Encoding, &str, &str)] = &[
        (super::spec::Encoding::Plain, "k-1", "k-1"),
        (super::spec::Encoding::Base64, "k-1", "ay0x"),
        (super::spec::Encoding::Base64, "", ""),
    ];
    for (enc, plain, encoded) in cases {
        assert_eq!(super::encode(*enc, plain), *encoded);
        assert_eq!(super::decode(*enc, encoded).unwrap(), *plain);
    }
    assert!(super::decode(super::spec::Encoding::Base64, "%%%").is_err());
    let mut body = json!({"key": "{key}", "nested": ["{value}", "{other}"], "n": 1});
    super::fill(&mut body, &|s| match s {
        "{key}" => Some("K".into()),
        "{value}" => Some("V".into()),
        _ => None,
    });
    assert_eq!(body, json!({"key": "K", "nested": ["V", "{other}"], "n": 1}));
}

/// A fake backend: what each command prints, and how many commands ran.
struct FakeExec {
    out: crate::backend::CmdOutput,
    ran: std::sync::Mutex<Vec<(String, Vec<String>)>>,
}

impl crate::backend::Exec for FakeExec {
    fn exec<'a>(
        &'a self,
        node: &'a str,
        cmd: Vec<String>,
        _timeout: std::time::Duration,
    ) -> crate::backend::ExecFuture<'a> {
        self.ran.lock().unwrap().push((node.to_owned(), cmd));
        let out = self.out.clone();
        Box::pin(async move { Ok(out) })
    }
}

fn target_with(out: crate::backend::CmdOutput) -> (super::Target, std::sync::Arc<FakeExec>) {
    let exec = std::sync::Arc::new(FakeExec { out, ran: Default::default() });
    let t = super::Target::new(
        std::sync::Arc::new(shipped("etcd-3")),
        reqwest::Client::new(),
        exec.clone(),
    );
    (t, exec)
}

/// A command source runs beside the node it reads (`{node}` filled in, the ports left to the
/// backend) and its stdout is the document; a failed or garbled run is no answer, saying why.
#[tokio::test]
async fn a_command_source_is_run_beside_its_node_and_read_as_json() {
    use crate::backend::CmdOutput;
    let spec = shipped("etcd-3");
    let super::spec::SourceSpec::Command(c) = &spec.sources["cluster"] else {
        panic!("etcd's member list is a command source")
    };
    // (what the command does, what the read gives)
    let cases: &[(CmdOutput, Result<Value, &str>)] = &[
        (
            CmdOutput {
                code: 0,
                stdout: r#"{"members": [{"ID": 7}]}"#.into(),
                ..Default::default()
            },
            Ok(json!({"members": [{"ID": 7}]})),
        ),
        (
            CmdOutput {
                code: 1,
                stdout: "".into(),
                stderr: "Error: rpc not supported for learner\nmore".into(),
                ..Default::default()
            },
            Err("exited 1: Error: rpc not supported for learner"),
        ),
        (
            CmdOutput { code: 0, stdout: "not json".into(), ..Default::default() },
            Err("printed no JSON document"),
        ),
    ];
    for (out, want) in cases {
        let (target, exec) = target_with(out.clone());
        let got = target.run_source("node2", c).await;
        match (want, got) {
            (Ok(w), Ok(g)) => assert_eq!(&g, w),
            (Err(w), Err(super::ReadError::NoAnswer(g))) => {
                assert!(g.contains(w) && g.contains("etcdctl"), "{g}")
            }
            (w, g) => panic!("want {w:?}, got {g:?}"),
        }
        let ran = exec.ran.lock().unwrap();
        assert_eq!(ran.len(), 1);
        assert_eq!(ran[0].0, "node2");
        assert!(ran[0].1.contains(&"http://127.0.0.1:{port}".to_owned()), "{:?}", ran[0].1);
    }
}

/// Answers every HTTP request on a loopback port with `body` (JSON); returns the base URL.
async fn serve_json(body: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = vec![0u8; 4096];
            let _ = conn.read(&mut buf).await;
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(answer.as_bytes()).await;
        }
    });
    base
}

/// The sampler reads only the primary source: a command source would cost a process per node
/// several times a second. A full read runs the command; a node whose primary source does not
/// answer is asked nothing else.
#[tokio::test]
async fn reading_the_primary_alone_runs_no_command() {
    let members =
        r#"{"members": [{"ID": 42, "name": "node1", "clientURLs": ["http://node1:2379"]}]}"#;
    let out = crate::backend::CmdOutput { code: 0, stdout: members.into(), ..Default::default() };
    let (target, exec) = target_with(out);
    let base = serve_json(
        r#"{"header": {"member_id": "42"}, "leader": "42", "raftTerm": "3", "raftIndex": "9"}"#,
    )
    .await;
    let primary = target.read_primary("node1", &base).await.unwrap();
    assert_eq!(primary.status.role, super::Role::Leader);
    assert!(primary.status.voters.is_empty(), "no member list read");
    assert!(exec.ran.lock().unwrap().is_empty(), "the primary alone runs no command");
    let full = target.read("node1", &base).await.unwrap();
    assert_eq!(full.status.voters, vec!["42".to_owned()], "members from the command");
    assert_eq!(full.status.name.as_deref(), Some("node1"));
    assert_eq!(exec.ran.lock().unwrap().len(), 1);
    // Nothing listens on port 9 of loopback: the primary fails, and nothing else is asked.
    assert!(target.read("node1", "http://127.0.0.1:9").await.is_err());
    assert_eq!(exec.ran.lock().unwrap().len(), 1, "no command ran when the primary failed");
}
