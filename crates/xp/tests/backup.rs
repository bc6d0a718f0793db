//! Backup on a live cluster, restore on a brand-new node, rejoin. Ports 27000-27099.

use std::time::Duration;

use xp_testkit::{bin, join_token, kv_get, kv_put, wait_for, Cluster, ADMIN_TOKEN};

const T: Duration = Duration::from_secs(20);

/// `xp-ops xp restore --file F -y` against a node's env file.
fn restore(node: &xp_testkit::Node, file: &std::path::Path) -> std::process::Output {
    std::process::Command::new(bin("xp-ops"))
        .args(["xp", "restore", "-y", "--file"])
        .arg(file)
        .arg("--env-file")
        .arg(&node.env_file)
        .output()
        .unwrap()
}

#[test]
fn backup_destroy_restore_rejoin() {
    let mut c = Cluster::new(27000, 5, 3);
    let leader = c.boot(3, T);
    let lurl = c.nodes[leader - 1].url();
    for k in 0..30 {
        kv_put(&lurl, &format!("k{k}"), &format!("v{k}")).unwrap();
    }
    let old_id = c.nodes[leader - 1].info().unwrap()["cluster_id"].clone();

    // The operator's backup, through xp-ops, from a follower's host. The follower names the
    // leader, but xp-ops sends the admin token only where the operator points it: it says
    // where to point it, and the operator does.
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let file = c.dir.path().join("cluster.backup.json");
    let backup_via = |url: Option<&str>| {
        let mut cmd = std::process::Command::new(bin("xp-ops"));
        cmd.args(["cluster", "backup", "--out"]).arg(&file);
        cmd.arg("--env-file").arg(&c.nodes[follower - 1].env_file);
        if let Some(url) = url {
            cmd.args(["--url", url]);
        }
        cmd.output().unwrap()
    };
    let o = backup_via(None);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains(&format!("run again with --url {lurl}")), "{stderr}");
    assert!(!file.exists());
    let backup = || backup_via(Some(&lurl));
    let o = backup();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let again = backup();
    assert_eq!(again.status.code(), Some(2), "an existing backup is not overwritten");
    let (s, _) = xp_testkit::get_json(&format!("{lurl}/api/admin/cluster/backup")).unwrap();
    assert_eq!(s, 401, "backups need the admin token ({ADMIN_TOKEN} not sent)");

    // The whole cluster is lost.
    for i in 1..=3 {
        c.node(i).kill();
    }

    // Restore refusals: a corrupt file, a node with state.
    let mut corrupt: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    corrupt["state"]["data"]["kv"]["k0"] = serde_json::json!("tampered");
    let bad = c.dir.path().join("bad.json");
    std::fs::write(&bad, corrupt.to_string()).unwrap();
    let o = restore(&c.nodes[3], &bad);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("checksum mismatch"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!c.nodes[3].data_dir.join("raft").exists(), "nothing restored from a corrupt file");
    let o = restore(&c.nodes[0], &file);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("restore only onto a brand-new node"));

    // Without -y: refused before anything is read or written.
    let o = std::process::Command::new(bin("xp-ops"))
        .args(["xp", "restore", "--file"])
        .arg(&file)
        .arg("--env-file")
        .arg(&c.nodes[3].env_file)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(!c.nodes[3].data_dir.join("raft").exists());

    // node4 is brand new: restore, start, it leads a new cluster with every key.
    let env4 = c.nodes[3].env_file.clone();
    std::fs::write(&env4, std::fs::read_to_string(&env4).unwrap() + "XP_NODE_ID=10\n").unwrap();
    let o = restore(&c.nodes[3], &file);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    c.node(4).start();
    let v = wait_for("the restored node to lead", T, || {
        let v = c.nodes[3].info()?;
        if v["role"] == "leader" {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    });
    assert_ne!(v["cluster_id"], old_id, "a restore makes a new cluster identity");
    assert_eq!(v["voters"], serde_json::json!([10]));
    let url4 = c.nodes[3].url();
    for k in 0..30 {
        assert_eq!(kv_get(&url4, &format!("k{k}")).unwrap(), Some(format!("v{k}")));
    }

    // A new node joins the restored cluster with a token.
    let (token, _) = join_token(&url4, 60).unwrap();
    assert!(c.nodes[4].xp_join(&token).status.success());
    c.node(5).start();
    wait_for("node5 to follow the restored leader", T, || {
        let v = c.nodes[4].info()?;
        if v["role"] == "follower" && v["leader_api_base_url"] == url4.as_str() {
            Ok(())
        } else {
            Err(v.to_string())
        }
    });
    assert_eq!(kv_get(&c.nodes[4].url(), "k7").unwrap().as_deref(), Some("v7"));

    // An old node coming back cannot disturb it.
    c.node(1).start();
    std::thread::sleep(Duration::from_millis(800));
    let v = c.nodes[3].info().unwrap();
    assert_eq!(v["role"], "leader");
    assert_eq!(v["voters"].as_array().unwrap().len(), 2);
}
