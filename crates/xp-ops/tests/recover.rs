//! `xp-ops xp recover-single-node` and `inspect` against data dirs produced by real `xp` nodes.
//! Ports 23000-23299 belong to this file; each test takes its own block of 20.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::Value;
use xp_testkit::{bin, join_token, kv_get, kv_put, wait_for, Cluster, Node};

const T: Duration = Duration::from_secs(20);
const KEYS: usize = 10;

/// A 3-node cluster run to a known state (KEYS keys written and applied everywhere), then fully
/// stopped: the starting point of every recovery test. `extra_env` goes into every env file.
fn stopped_cluster(base_port: u16, extra_env: &str) -> Cluster {
    let mut c = Cluster::new(base_port, 3, 3);
    for n in &c.nodes {
        let mut env = std::fs::read_to_string(&n.env_file).unwrap();
        env.push_str(extra_env);
        std::fs::write(&n.env_file, env).unwrap();
    }
    for i in 1..=3 {
        c.node(i).start();
    }
    let leader = c.wait_leader(&[1, 2, 3], T);
    let mut last = 0;
    for k in 0..KEYS {
        last =
            kv_put(&c.nodes[leader - 1].url(), &format!("key{k}"), &format!("value{k}")).unwrap();
    }
    for i in 1..=3 {
        let n = &c.nodes[i - 1];
        wait_for("every write applied on every node", T, || {
            let v = n.info()?;
            if v["last_applied_index"].as_u64().unwrap() >= last {
                Ok(())
            } else {
                Err(v.to_string())
            }
        });
    }
    for i in 1..=3 {
        c.node(i).terminate();
    }
    c
}

fn ops(env: &Path, args: &[&str]) -> Output {
    Command::new(bin("xp-ops")).args(["xp"]).args(args).arg("--env-file").arg(env).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn digest(dir: &Path) -> std::collections::BTreeMap<String, String> {
    xp_recovery::tree_digest(dir).unwrap()
}

fn inspect_json(env: &Path) -> Value {
    let o = ops(env, &["inspect", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn voters(i: &Value) -> Vec<u64> {
    let m = &i["effective_membership"]["membership"];
    let mut v: Vec<u64> =
        m["configs"][0].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    v.sort();
    v
}

/// Starts `node`, waits for it to lead alone, checks its info, returns how long it took.
fn start_and_expect_single_leader(node: &mut Node) -> Duration {
    let t = Instant::now();
    node.start();
    let info = wait_for("the recovered node to become leader", T, || {
        let v = node.info()?;
        if v["role"] == "leader" {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    });
    let took = t.elapsed();
    assert_eq!(info["leader_api_base_url"], node.url().as_str());
    assert_eq!(info["voters"], serde_json::json!([info["node_id"]]));
    took
}

#[test]
fn full_drill_recover_then_rejoin_a_wiped_node() {
    let mut c = stopped_cluster(23000, "");
    let env1 = c.nodes[0].env_file.clone();
    let raft1 = c.nodes[0].data_dir.join("raft");
    let before = digest(&raft1);

    // Without -y: refused, exit 2, not a byte changed.
    let o = ops(&env1, &["recover-single-node"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("without -y/--yes; run with --dry-run first"), "{}", stderr(&o));
    assert_eq!(digest(&raft1), before);

    // Dry run: prints the plan and the warning, changes nothing.
    let o = ops(&env1, &["recover-single-node", "--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("UNSAFE consensus override"), "{out}");
    assert!(out.contains("voters now:        [1, 2, 3] -> after: [1]"), "{out}");
    assert!(out.contains("dry run: nothing changed"), "{out}");
    assert_eq!(digest(&raft1), before);
    assert!(!std::fs::read_dir(&c.nodes[0].data_dir).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("raft.bak")));

    // Recover for real: a verified backup identical to the old state, and a record.
    let o = ops(&env1, &["recover-single-node", "-y"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("next steps:"));
    let backups: Vec<PathBuf> = std::fs::read_dir(&c.nodes[0].data_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("raft.bak-"))
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert_eq!(digest(&backups[0]), before, "the backup is a complete, identical copy");
    let records: Vec<PathBuf> = std::fs::read_dir(&c.nodes[0].data_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("recovery-"))
        .collect();
    let record: Value = serde_json::from_slice(&std::fs::read(&records[0]).unwrap()).unwrap();
    assert_eq!(record["voters_before"], serde_json::json!([1, 2, 3]));
    assert_eq!(record["voters_after"], serde_json::json!([1]));
    assert_eq!(record["generation"], 1);

    // Running it again: nothing to do.
    let o = ops(&env1, &["recover-single-node", "-y"]);
    assert!(o.status.success());
    assert!(stdout(&o).starts_with("nothing to do"), "{}", stdout(&o));

    // Start: leader alone, with its own URL; every committed key is readable.
    let took = start_and_expect_single_leader(c.node(1));
    eprintln!("measured: recovered node start to leader in {took:?}");
    for k in 0..KEYS {
        assert_eq!(
            kv_get(&c.nodes[0].url(), &format!("key{k}")).unwrap(),
            Some(format!("value{k}"))
        );
    }

    // node3 comes back with its old data: it is fenced off and changes nothing.
    c.node(3).start();
    wait_for("node3 to be fenced by the recovered cluster", T, || {
        let v = c.nodes[2].info()?;
        (v["health"] == "fenced").then_some(()).ok_or(v.to_string())
    });
    let v = c.nodes[0].info().unwrap();
    assert_eq!((v["role"].as_str(), v["voters"].clone()), (Some("leader"), serde_json::json!([1])));
    assert_eq!(v["recovery_generation"], 1);
    c.node(3).terminate();
    // `inspect` shows the fence, and the tool will not recover that disk.
    let env3 = c.nodes[2].env_file.clone();
    let insp: Value = serde_json::from_slice(&ops(&env3, &["inspect", "--json"]).stdout).unwrap();
    assert_eq!(insp["recovery_generation"], 0, "node3 never learned the recovery");
    assert!(insp["fence"]["reason"].as_str().unwrap().contains("generation 1"), "{insp}");
    let o = ops(&env3, &["recover-single-node", "-y"]);
    assert_eq!(o.status.code(), Some(3), "{}", stdout(&o));

    // node2's disk is replaced: wiped, joined with a token from the new leader.
    assert!(c.nodes[1].xp(&["wipe", "--yes"]).status.success());
    let (token, new_id) = join_token(&c.nodes[0].url(), 300).unwrap();
    let o = c.nodes[1].xp_join(&token);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    c.node(2).start();
    let leader_url = c.nodes[0].url();
    wait_for("node2 to follow the recovered leader as a voter", T, || {
        let v = c.nodes[1].info()?;
        let ok = v["leader_api_base_url"] == leader_url.as_str()
            && v["voters"] == serde_json::json!([1, new_id])
            && v["role"] == "follower";
        if ok {
            Ok(())
        } else {
            Err(v.to_string())
        }
    });
    kv_put(&leader_url, "after-recovery", "yes").unwrap();
    assert_eq!(kv_get(&c.nodes[1].url(), "after-recovery").unwrap().as_deref(), Some("yes"));
    assert_eq!(kv_get(&c.nodes[1].url(), "key3").unwrap().as_deref(), Some("value3"));
}

#[test]
fn uncommitted_entries_and_a_membership_entry_after_last_applied() {
    let mut c = stopped_cluster(23020, "");
    // Only node1 runs: it is a follower of nobody; make node1 leader of a 3-node config with
    // no quorum by starting all, stopping the other two, then writing on node1 if it leads.
    for i in 1..=3 {
        c.node(i).start();
    }
    let leader = c.wait_leader(&[1, 2, 3], T);
    for i in (1..=3).filter(|i| *i != leader) {
        c.node(i).kill();
    }
    // A write the leader appends but can never commit (no quorum): it hangs, so fire and forget.
    let url = c.nodes[leader - 1].url();
    std::thread::spawn(move || {
        let _ = kv_put(&url, "uncommitted", "kept");
    });
    let n = &c.nodes[leader - 1];
    let applied = wait_for("the uncommitted entry to be appended", T, || {
        let v = n.info()?;
        let (log, applied) =
            (v["last_log_index"].as_u64().unwrap(), v["last_applied_index"].as_u64().unwrap());
        if log > applied {
            Ok(applied)
        } else {
            Err(v.to_string())
        }
    });
    c.node(leader).terminate();

    // Also leave a membership entry after last_applied, as a half-done membership change would:
    // the old voters plus a learner. Written through the store's own code, like openraft would.
    let env = c.nodes[leader - 1].env_file.clone();
    let dir = xp_store::RaftDir::new(c.nodes[leader - 1].data_dir.join("raft"));
    {
        let mut log = dir.open_log(xp_store::log::OpenMode::Repair).unwrap();
        let last = log.last_log_id().unwrap();
        let sm = dir.read_state_machine().unwrap().unwrap();
        let mut nodes: std::collections::BTreeMap<u64, xp_store::NodeMeta> =
            sm.last_membership.membership().nodes().map(|(k, v)| (*k, v.clone())).collect();
        nodes.insert(
            9,
            xp_store::NodeMeta { name: "ghost".into(), api_base_url: "http://127.0.0.1:1".into() },
        );
        let configs = vec![sm.last_membership.membership().voter_ids().collect()];
        log.append([xp_store::Entry {
            log_id: xp_store::LogId::new(last.leader_id, last.index + 1),
            payload: xp_store::EntryPayload::Membership(xp_store::Membership::new(configs, nodes)),
        }])
        .unwrap();
    }
    let i = inspect_json(&env);
    assert_eq!(i["membership_source"], "log");
    assert!(i["entries_after_applied"].as_u64().unwrap() >= 2);
    assert_eq!(i["last_applied"]["index"].as_u64().unwrap(), applied);

    let o = ops(&env, &["recover-single-node", "--dry-run"]);
    assert!(
        stdout(&o).contains(
            "not known to be committed are kept; as the only voter this node will commit them"
        ),
        "{}",
        stdout(&o)
    );
    let o = ops(&env, &["recover-single-node", "-y"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let i = inspect_json(&env);
    assert_eq!(voters(&i), [leader as u64]);
    assert_eq!(i["membership_source"], "log");

    start_and_expect_single_leader(c.node(leader));
    // The uncommitted write was kept and is now committed by the single voter.
    assert_eq!(kv_get(&c.nodes[leader - 1].url(), "uncommitted").unwrap().as_deref(), Some("kept"));
    let v = c.nodes[leader - 1].info().unwrap();
    assert_eq!(v["learners"], serde_json::json!([]), "the ghost learner is gone");
}

#[test]
fn a_data_dir_with_a_snapshot_is_brought_in_line() {
    let mut c = stopped_cluster(23040, "XP_RAFT_SNAPSHOT_LOGS=4\n");
    let env = c.nodes[0].env_file.clone();
    let before = inspect_json(&env);
    assert!(!before["snapshot"].is_null(), "a snapshot was built: {before}");
    let o = ops(&env, &["recover-single-node", "-y", "--no-backup"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("--no-backup: raft/ is NOT backed up"));
    assert!(!std::fs::read_dir(&c.nodes[0].data_dir).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("raft.bak")));
    let snap: Value = serde_json::from_slice(
        &std::fs::read(c.nodes[0].data_dir.join("raft/snapshot.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(snap["meta"]["last_membership"]["membership"]["configs"], serde_json::json!([[1]]));
    start_and_expect_single_leader(c.node(1));
    for k in 0..KEYS {
        assert_eq!(
            kv_get(&c.nodes[0].url(), &format!("key{k}")).unwrap(),
            Some(format!("value{k}"))
        );
    }
}

#[test]
fn refusals_leave_everything_as_it_was() {
    let mut c = stopped_cluster(23060, "");
    let n1 = &c.nodes[0];
    let raft1 = n1.data_dir.join("raft");
    let before = digest(&raft1);
    let dir = c.dir.path().to_owned();

    // Env file missing / malformed: exit 2 naming the file or key.
    let o = ops(&dir.join("nope.env"), &["recover-single-node", "-y"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read env file"), "{}", stderr(&o));
    let bad = dir.join("bad.env");
    std::fs::write(&bad, "XP_DATA_DIR=/x\nXP_NODE_NAME=node1\nXP_API_BASE_URL=ftp://x\n").unwrap();
    let o = ops(&bad, &["recover-single-node", "-y"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bad.env:3: invalid XP_API_BASE_URL"), "{}", stderr(&o));

    // Missing Raft state: exit 3, readable.
    let empty = dir.join("empty.env");
    let env1 = std::fs::read_to_string(&n1.env_file).unwrap();
    std::fs::write(
        &empty,
        env1.replace(n1.data_dir.to_str().unwrap(), dir.join("void").to_str().unwrap()),
    )
    .unwrap();
    let o = ops(&empty, &["recover-single-node", "-y"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains("missing Raft state: ")
            && stderr(&o).contains("state_machine.json does not exist"),
        "{}",
        stderr(&o)
    );

    // Wrong env file for this data dir (node2's name): refused.
    let wrong = dir.join("wrong.env");
    let renamed: String = env1
        .lines()
        .filter(|l| !l.starts_with("XP_BOOTSTRAP_MEMBERS") && !l.starts_with("XP_NODE_ID"))
        .map(|l| l.replace("XP_NODE_NAME=node1", "XP_NODE_NAME=node2") + "\n")
        .collect();
    std::fs::write(&wrong, renamed).unwrap();
    let o = ops(&wrong, &["recover-single-node", "-y"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("wrong env file or wrong data dir"), "{}", stderr(&o));

    // Running node (lock held): refused, says to stop it.
    c.node(1).start();
    wait_for("node1 up", T, || c.nodes[0].info());
    let o = ops(&c.nodes[0].env_file, &["recover-single-node", "-y"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("stop it first"), "{}", stderr(&o));
    let o = ops(&c.nodes[0].env_file, &["inspect"]);
    assert_eq!(o.status.code(), Some(3));
    c.node(1).terminate();
    let before = {
        let _ = before;
        digest(&raft1) // the node ran meanwhile; re-take the reference
    };

    // This node is not in the membership (its identity says node 42).
    let n1 = &c.nodes[0];
    let id_path = raft1.join("identity.json");
    let original_id = std::fs::read(&id_path).unwrap();
    std::fs::write(&id_path, r#"{"node_id":42,"node_name":"node1"}"#).unwrap();
    let o = ops(&n1.env_file, &["recover-single-node", "-y"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains("refusing: node 42 (node1) is not in its own effective membership"),
        "{}",
        stderr(&o)
    );
    std::fs::write(&id_path, &original_id).unwrap();

    // Corrupt state_machine.json: refused naming the file; nothing else touched.
    let sm_path = raft1.join("state_machine.json");
    let sm = std::fs::read(&sm_path).unwrap();
    std::fs::write(&sm_path, &sm[..sm.len() / 2]).unwrap();
    let o = ops(&n1.env_file, &["recover-single-node", "-y"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("state_machine.json: corrupt Raft state"), "{}", stderr(&o));
    std::fs::write(&sm_path, &sm).unwrap();

    // Corrupt log record in the middle: refused.
    let log_path = raft1.join("log.bin");
    let log = std::fs::read(&log_path).unwrap();
    let mut bad_log = log.clone();
    bad_log[12] ^= 0x55;
    std::fs::write(&log_path, &bad_log).unwrap();
    let o = ops(&n1.env_file, &["recover-single-node", "-y"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains("log.bin: corrupt Raft state: bad record at byte 0"),
        "{}",
        stderr(&o)
    );
    std::fs::write(&log_path, &log).unwrap();

    assert_eq!(digest(&raft1), before, "no refusal changed a byte");
    assert!(!std::fs::read_dir(&n1.data_dir).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("raft.bak")));
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn a_crash_at_every_write_point_leaves_old_state_or_a_finishable_one() {
    let mut c = stopped_cluster(23080, "");
    let pristine = c.nodes[0].data_dir.clone();
    let env_text = std::fs::read_to_string(&c.nodes[0].env_file).unwrap();
    let old = digest(&pristine.join("raft"));
    let steps =
        ["backup", "journal", "vote", "log_entry", "state_machine", "snapshot", "record", "done"];
    for step in steps {
        let data = c.dir.path().join(format!("crash-{step}"));
        copy_tree(&pristine, &data);
        let env = c.dir.path().join(format!("crash-{step}.env"));
        std::fs::write(&env, env_text.replace(pristine.to_str().unwrap(), data.to_str().unwrap()))
            .unwrap();

        let o = Command::new(bin("xp-ops"))
            .args(["xp", "recover-single-node", "-y", "--env-file"])
            .arg(&env)
            .env("XP_OPS_FAULT_AT", step)
            .output()
            .unwrap();
        assert!(!o.status.success(), "{step}: the injected crash must stop the run");
        let journal = data.join("raft/recovery.json").exists();
        let now = digest(&data.join("raft"));
        if !journal {
            assert_eq!(now, old, "{step}: without a journal the state must be the old one");
        } else {
            // The node refuses to start on a half-recovered dir.
            let out = std::process::Command::new(bin("xp"))
                .arg("--env-file")
                .arg(&env)
                .arg("run")
                .output()
                .unwrap();
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("was interrupted; run it again"),
                "{step}"
            );
        }
        let o = ops(&env, &["recover-single-node", "-y"]);
        assert!(o.status.success(), "{step}: re-run must finish: {}", stderr(&o));
        let i = inspect_json(&env);
        assert_eq!(voters(&i), [1], "{step}");
        assert_eq!(i["recovery_in_progress"], false, "{step}");
        assert_eq!(
            i["state_machine_membership"]["membership"]["configs"],
            serde_json::json!([[1]]),
            "{step}"
        );
    }
    // One of them, started: a leader with the data.
    let data = c.dir.path().join("crash-vote");
    let env = c.dir.path().join("crash-vote.env");
    let _ = &mut c;
    let mut n = Node::from_env(&env, &data, 23081, &c.dir.path().join("crash-vote.log"));
    start_and_expect_single_leader(&mut n);
    assert_eq!(kv_get(&n.url(), "key0").unwrap().as_deref(), Some("value0"));
}

/// A crash between the state-machine write and the log purge of a snapshot install leaves
/// `last_applied` past the end of the live log. Before the fix the recovery's append failed
/// ("would leave a hole") after the vote and the journal were written, and every re-run failed.
#[test]
fn recovery_when_last_applied_is_past_the_end_of_the_log() {
    let mut c = stopped_cluster(23100, "");
    let env1 = c.nodes[0].env_file.clone();
    let log_path = c.nodes[0].data_dir.join("raft/log.bin");
    let bytes = std::fs::read(&log_path).unwrap();
    // Keep the first 3 records only.
    let mut pos = 0;
    for _ in 0..3 {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        pos += 8 + len;
    }
    std::fs::write(&log_path, &bytes[..pos]).unwrap();
    let before = inspect_json(&env1);
    let applied = before["last_applied"]["index"].as_u64().unwrap();
    assert!(before["last_log_id"]["index"].as_u64().unwrap() < applied, "{before}");

    let o = ops(&env1, &["recover-single-node", "--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(&format!("purge the log up to {applied}")), "{}", stdout(&o));
    let o = ops(&env1, &["recover-single-node", "-y"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let after = inspect_json(&env1);
    assert_eq!(after["last_log_id"]["index"].as_u64().unwrap(), applied + 2, "{after}");
    assert_eq!(after["recovery_generation"], 1);
    start_and_expect_single_leader(c.node(1));
    for k in 0..KEYS {
        let v = kv_get(&c.nodes[0].url(), &format!("key{k}")).unwrap();
        assert_eq!(v, Some(format!("value{k}")), "key{k}");
    }
    kv_put(&c.nodes[0].url(), "after", "yes").unwrap();
}
