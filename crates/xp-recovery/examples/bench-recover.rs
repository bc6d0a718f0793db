//! Benchmark of single-node recovery on data dirs with large logs (`cargo xtask bench recover`).
//!
//! Builds a realistic data dir through `xp-store` (the node's own format: a 3-voter membership,
//! N KV entries in `log.bin`, a state machine that applied all but the last 100), then times
//! inspect + plan + apply + verify, with and without the backup.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Instant, SystemTime};

use openraft::CommittedLeaderId;
use xp_config::Config;
use xp_store::log::OpenMode;
use xp_store::{
    Entry, EntryPayload, Identity, LogId, Membership, NodeMeta, RaftDir, Request, SmFile,
    StoredMembership, Vote,
};

fn make_data_dir(data: &Path, entries: u64) -> Config {
    let dir = RaftDir::new(data.join("raft"));
    dir.create().unwrap();
    dir.write_identity(&Identity::new(1, "node1")).unwrap();
    let nodes: BTreeMap<u64, NodeMeta> = (1..=3)
        .map(|i| {
            (i, NodeMeta { name: format!("node{i}"), api_base_url: format!("http://node{i}:8080") })
        })
        .collect();
    let membership = Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes);
    let lid = |i: u64| LogId::new(CommittedLeaderId::new(3, 1), i);
    let mut log = dir.open_log(OpenMode::Repair).unwrap();
    let mut batch =
        vec![Entry { log_id: lid(1), payload: EntryPayload::Membership(membership.clone()) }];
    let mut sm = SmFile {
        last_membership: StoredMembership::new(Some(lid(1)), membership),
        ..Default::default()
    };
    for i in 2..=entries {
        let (key, value) = (format!("key-{i}"), format!("value-{i}-{}", "x".repeat(64)));
        if i + 100 <= entries {
            sm.data.kv.insert(key.clone(), value.clone());
        }
        batch.push(Entry {
            log_id: lid(i),
            payload: EntryPayload::Normal(Request::Set { key, value }),
        });
        if batch.len() == 10_000 {
            log.append(std::mem::take(&mut batch)).unwrap();
        }
    }
    log.append(batch).unwrap();
    sm.last_applied = Some(lid(entries.saturating_sub(100).max(1)));
    dir.write_state_machine(&sm).unwrap();
    dir.write_vote(&Vote::new_committed(3, 1)).unwrap();
    dir.write_committed(sm.last_applied).unwrap();
    let env = format!(
        "XP_DATA_DIR={}\nXP_NODE_NAME=node1\nXP_API_BASE_URL=http://node1:8080\n",
        data.display()
    );
    Config::parse(Path::new("bench.env"), &env).unwrap()
}

fn du(path: &Path) -> u64 {
    std::fs::read_dir(path).unwrap().flatten().map(|e| e.metadata().unwrap().len()).sum()
}

fn main() {
    let sizes: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![10_000, 100_000] } else { sizes };
    println!(
        "{:>10} {:>10} {:>14} {:>14} {:>14}",
        "entries", "raft/ MiB", "no backup", "with backup", "backup alone"
    );
    for n in sizes {
        let mut times = Vec::new();
        let mut mib = 0.0;
        for backup in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            let config = make_data_dir(tmp.path(), n);
            mib = du(&config.raft_dir()) as f64 / (1024.0 * 1024.0);
            let t = Instant::now();
            let insp = xp_recovery::inspect(&config).unwrap();
            let plan =
                xp_recovery::plan(&config, &insp, backup, SystemTime::now()).unwrap().unwrap();
            xp_recovery::apply(&config, &plan, &mut |_| {}).unwrap();
            xp_recovery::verify(&config, &plan).unwrap();
            times.push(t.elapsed());
        }
        let tmp = tempfile::tempdir().unwrap();
        let config = make_data_dir(tmp.path(), n);
        let t = Instant::now();
        xp_recovery::backup_raft_dir(&config.raft_dir(), &tmp.path().join("raft.bak-bench"))
            .unwrap();
        let backup = t.elapsed();
        println!(
            "{n:>10} {mib:>10.1} {:>13.3}s {:>13.3}s {:>13.3}s",
            times[0].as_secs_f64(),
            times[1].as_secs_f64(),
            backup.as_secs_f64()
        );
    }
}
