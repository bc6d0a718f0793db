//! Timings of cluster operations with a few thousand keys (`cargo xtask bench ops [KEYS]`):
//! add-node catch-up, leadership transfer, backup (time and size) and restore.

use std::time::Instant;

use serde_json::json;
use xp_testkit::{bin, kv_get, kv_put, send_json, wait_for, Cluster, ADMIN_TOKEN};

fn main() {
    let keys: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(3000);
    let t = std::time::Duration::from_secs(60);
    let mut c = Cluster::new(28000, 5, 3);
    for i in [4, 5] {
        let env = c.nodes[i - 1].env_file.clone();
        let text = std::fs::read_to_string(&env).unwrap() + &format!("XP_NODE_ID={}\n", i * 10);
        std::fs::write(&env, text).unwrap();
    }
    for i in 1..=4 {
        c.node(i).start();
    }
    let leader = c.wait_leader(&[1, 2, 3], t);
    let lurl = c.nodes[leader - 1].url();
    let start = Instant::now();
    for k in 0..keys {
        kv_put(&lurl, &format!("key-{k:06}"), &format!("value-{k}-{}", "x".repeat(40))).unwrap();
    }
    println!(
        "wrote {keys} keys in {:.2}s ({:.0}/s, one at a time)",
        start.elapsed().as_secs_f64(),
        keys as f64 / start.elapsed().as_secs_f64()
    );
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let post = |path: &str, body: serde_json::Value| {
        send_json("POST", &format!("{lurl}{path}"), &body, &[("Authorization", &auth)]).unwrap()
    };

    let (s, v) = post(
        "/api/admin/cluster/add-node",
        json!({ "node_id": 40, "name": "node4", "api_base_url": c.nodes[3].url() }),
    );
    assert_eq!(s, 200, "{v}");
    println!("add-node (learner, catch up on {keys} keys, promote): {} ms", v["took_ms"]);
    assert!(kv_get(&c.nodes[3].url(), "key-000007").unwrap().is_some());

    let start = Instant::now();
    let (s, _, body) = xp_testkit::http(
        "GET",
        &format!("{lurl}/api/admin/cluster/backup"),
        None,
        &[("Authorization", &auth)],
    )
    .unwrap();
    assert_eq!(s, 200);
    println!(
        "backup: {} ms, {} bytes ({:.1} KiB)",
        start.elapsed().as_millis(),
        body.len(),
        body.len() as f64 / 1024.0
    );
    let file = c.dir.path().join("bench.backup.json");
    std::fs::write(&file, &body).unwrap();

    let (s, v) = post("/api/admin/cluster/leader-transfer", json!({}));
    assert_eq!(s, 200, "{v}");
    println!("leader-transfer: {} ms", v["took_ms"]);

    let start = Instant::now();
    let out = std::process::Command::new(bin("xp-ops"))
        .args(["xp", "restore", "-y", "--file"])
        .arg(&file)
        .arg("--env-file")
        .arg(&c.nodes[4].env_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let restore = start.elapsed();
    c.node(5).start();
    let url5 = c.nodes[4].url();
    wait_for("the restored node to lead", t, || {
        let v = c.nodes[4].info()?;
        if v["role"] == "leader" {
            Ok(())
        } else {
            Err(v.to_string())
        }
    });
    println!(
        "restore: {} ms (+ {} ms to an elected leader)",
        restore.as_millis(),
        start.elapsed().as_millis() - restore.as_millis()
    );
    assert_eq!(
        kv_get(&url5, &format!("key-{:06}", keys - 1)).unwrap().map(|v| v.len()),
        Some(format!("value-{}-{}", keys - 1, "x".repeat(40)).len())
    );
}
