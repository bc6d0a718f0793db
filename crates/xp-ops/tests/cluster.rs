//! `xp-ops cluster ...` against a running 3-node cluster. Ports 26000-26099.

use std::process::Output;
use std::time::Duration;

use assert_cmd::Command;
use xp_testkit::{bin, Cluster};

const T: Duration = Duration::from_secs(20);

fn ops(env: &std::path::Path, args: &[&str]) -> Output {
    Command::new(bin("xp-ops"))
        .arg("cluster")
        .args(args)
        .arg("--env-file")
        .arg(env)
        .output()
        .unwrap()
}

#[test]
fn status_transfer_and_remove_from_the_command_line() {
    let mut c = Cluster::new(26000, 3, 3);
    for i in 1..=3 {
        c.node(i).start();
    }
    let leader = c.wait_leader(&[1, 2, 3], T);
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    // Commands may be run against any node: a follower names the leader, and xp-ops follows
    // it there with the admin token because the env file lists that URL (node 1's env file
    // holds XP_BOOTSTRAP_MEMBERS; a URL the operator never named gets no token, see
    // crates/xp/tests/trust.rs).
    let env = c.nodes[0].env_file.clone();
    let furl = c.nodes[follower - 1].url();
    for n in &c.nodes {
        xp_testkit::wait_for("a healthy node with a cluster id", T, || {
            let v = n.info()?;
            if v["health"] == "healthy" && v["cluster_id"] != "" {
                Ok(())
            } else {
                Err(v.to_string())
            }
        });
    }

    let o = ops(&env, &["status"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("health healthy"), "{out}");
    assert_eq!(out.lines().filter(|l| l.contains("node")).count(), 4, "{out}");

    let o = ops(&env, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["partial"], false);

    let target = c.nodes[follower - 1].info().unwrap()["node_id"].as_u64().unwrap();
    let o = ops(&env, &["transfer-leader", "--to", &target.to_string(), "--url", &furl]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not the leader; asking"));
    assert_eq!(c.wait_leader(&[1, 2, 3], T), follower);

    let victim = (1..=3).find(|i| *i != follower).unwrap();
    let vid = c.nodes[victim - 1].info().unwrap()["node_id"].as_u64().unwrap().to_string();
    let o = ops(&env, &["remove-node", &vid, "--confirm-voters-after", "2"]);
    assert_eq!(o.status.code(), Some(2), "no -y: refused");
    let o = ops(&env, &["remove-node", &vid, "--confirm-voters-after", "2", "--dry-run"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("would remove node {vid}"))
            && out.contains("dry run: nothing changed"),
        "{out}"
    );
    assert_eq!(c.nodes[follower - 1].info().unwrap()["voters"].as_array().unwrap().len(), 3);
    let o = ops(&env, &["remove-node", &vid, "--confirm-voters-after", "3", "-y"]);
    assert_eq!(o.status.code(), Some(3), "wrong confirmation: refused by the cluster");
    let o = ops(&env, &["remove-node", &vid, "--confirm-voters-after", "2", "-y"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(c.nodes[follower - 1].info().unwrap()["voters"].as_array().unwrap().len(), 2);

    // Output into a pipe closed early (`xp-ops cluster status | head -0`): no panic, exit 0.
    let mut child = std::process::Command::new(bin("xp-ops"))
        .args(["cluster", "status", "--env-file"])
        .arg(&env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));

    // A cluster that cannot be reached: exit 4 naming the URL.
    let o = ops(&env, &["status", "--url", "http://127.0.0.1:1"]);
    assert_eq!(o.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&o.stderr).contains("http://127.0.0.1:1/api/cluster/status"));
}
