//! Cluster status aggregation and health against real `xp` processes. Ports 24000-24099.

use std::time::Duration;

use xp_testkit::{get_json, wait_for, Cluster};

const T: Duration = Duration::from_secs(20);

fn status(url: &str) -> serde_json::Value {
    let (code, v) = get_json(&format!("{url}/api/cluster/status")).unwrap();
    assert_eq!(code, 200, "{v}");
    v
}

#[test]
fn status_is_partial_and_health_degrades_as_members_go() {
    let mut c = Cluster::new(24000, 3, 3);
    for i in 1..=3 {
        c.node(i).start();
    }
    let leader = c.wait_leader(&[1, 2, 3], T);
    for i in 1..=3 {
        let n = &c.nodes[i - 1];
        wait_for("every node healthy", T, || {
            let v = n.info()?;
            if v["health"] == "healthy" {
                Ok(())
            } else {
                Err(v.to_string())
            }
        });
    }
    let s = status(&c.nodes[leader - 1].url());
    assert_eq!(s["partial"], false, "{s}");
    assert_eq!(s["nodes"].as_array().unwrap().len(), 3);
    assert!(s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n["reachable"] == true && n["lag"].as_u64().is_some()));

    let others: Vec<usize> = (1..=3).filter(|i| *i != leader).collect();
    c.node(others[0]).kill();
    let gone = c.nodes[others[0] - 1].name.clone();
    let s = status(&c.nodes[leader - 1].url());
    assert_eq!(s["partial"], true, "{s}");
    assert_eq!(s["unreachable_nodes"], serde_json::json!([gone]));
    assert!(s["errors"][0].as_str().unwrap().starts_with(&format!("{gone} unreachable")), "{s}");
    assert_eq!(s["health"], "healthy", "two of three voters: still a majority");

    c.node(others[1]).kill();
    let n = &c.nodes[leader - 1];
    wait_for("the lone node to report degraded", T, || {
        let v = n.info()?;
        if v["health"] == "degraded" {
            Ok(())
        } else {
            Err(v.to_string())
        }
    });
    let s = status(&n.url());
    assert_eq!(s["unreachable_nodes"].as_array().unwrap().len(), 2, "{s}");
    assert_eq!(s["health"], "degraded");
}

#[test]
fn a_node_outside_any_membership_is_unconfigured() {
    let mut c = Cluster::new(24050, 1, 0);
    // A node with an id but no bootstrap members and no join starts outside any membership.
    std::fs::create_dir_all(&c.nodes[0].data_dir).unwrap();
    std::fs::write(
        c.nodes[0].env_file.clone(),
        std::fs::read_to_string(&c.nodes[0].env_file).unwrap() + "XP_NODE_ID=7\n",
    )
    .unwrap();
    c.node(1).start();
    let v = wait_for("the node to answer", T, || c.nodes[0].info());
    assert_eq!(v["health"], "unconfigured");
    assert_eq!(v["role"], "learner");
}
