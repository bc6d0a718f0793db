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
    let members = json!({"members": [
        {"ID": me, "name": "node1", "peerURLs": ["http://node1:2380"], "clientURLs": ["http://node1:2379"]},
        {"ID": other, "name": "node2", "peerURLs": ["http://node2:2380"], "clientURLs": ["http://node2:2379"]},
        {"ID": "77", "peerURLs": ["http://node3:2380"], "isLearner": true}
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
