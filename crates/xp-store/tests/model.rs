//! Model-based test of the on-disk store: random sequences of appends, truncations, commits,
//! snapshots (built here or installed from a leader), purges, crashes at any write and reopens
//! run against a real [`RaftDir`] and a tiny in-memory model; after every step the two must
//! agree, and no committed entry may be lost.
//!
//! A crash is simulated where the store can leave it: inside the last append (`log.bin` cut at
//! any byte of it, or the appended bytes zeroed as some filesystems leave them after a power
//! cut, or extra zeros after it), between writing the purge point and compacting, or in an
//! atomic write (its `.NAME.tmp` left behind, never renamed).
//!
//! `PROPTEST_CASES=N` changes the number of cases (1 000 by default). A failure prints the
//! run's seed (`PROPTEST_RNG_SEED=N` replays it) and the minimal operation sequence, and saves
//! the case in `tests/model.proptest-regressions`.

use std::collections::BTreeMap;
use std::path::Path;

use openraft::CommittedLeaderId;
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, RngSeed};
use xp_store::log::{LogFile, OpenMode};
use xp_store::{
    Entry, EntryPayload, LogId, Membership, NodeMeta, RaftDir, Request, SmFile, SnapshotFile,
    SnapshotMeta, StoredMembership,
};

#[derive(Clone, Debug)]
enum Op {
    /// Appends `n` entries (the last a membership change if `membership`), under a new term
    /// if `new_term`; `value` sets the size of each payload.
    Append { n: usize, new_term: bool, membership: bool, value: usize },
    /// Truncates the uncommitted suffix from `skip` entries above the committed index.
    Truncate { skip: u64 },
    /// Commits up to `more + 1` further appended entries.
    Commit { more: u64 },
    /// Applies up to the committed index, writes the state machine and a snapshot, then
    /// purges the log up to it: 0 no purge, 1 purge, 2 crash after writing the purge point.
    Snapshot { purge: u8 },
    /// Installs a leader's snapshot `ahead` entries past the end of the log.
    InstallSnapshot { ahead: u64 },
    /// Appends `n` entries and crashes inside that append: the file is cut at byte `at` of it
    /// (modulo its size), or the bytes from there are zeros if `zeros`.
    CrashInAppend { n: usize, value: usize, at: usize, zeros: bool },
    /// A power cut left `len` zero bytes after the last record.
    ZeroTail { len: usize },
    /// Crashes inside the atomic write of one file: its temp file is left, not renamed.
    CrashInAtomicWrite { file: usize },
    /// Stops and reopens the store.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1..5usize, any::<bool>(), prop::bool::weighted(0.2), 0..300usize).prop_map(
            |(n, new_term, membership, value)| Op::Append { n, new_term, membership, value }
        ),
        2 => (0..4u64).prop_map(|skip| Op::Truncate { skip }),
        4 => (0..4u64).prop_map(|more| Op::Commit { more }),
        2 => (0..3u8).prop_map(|purge| Op::Snapshot { purge }),
        1 => (1..6u64).prop_map(|ahead| Op::InstallSnapshot { ahead }),
        3 => (1..4usize, 0..300usize, any::<usize>(), any::<bool>())
            .prop_map(|(n, value, at, zeros)| Op::CrashInAppend { n, value, at, zeros }),
        1 => (1..=4096usize).prop_map(|len| Op::ZeroTail { len }),
        1 => (0..4usize).prop_map(|file| Op::CrashInAtomicWrite { file }),
        2 => Just(Op::Reopen),
    ]
}

/// What the store must hold.
#[derive(Default)]
struct Model {
    /// Live entries (above the purge point).
    entries: BTreeMap<u64, Entry>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    sm: SmFile,
    term: u64,
    /// Every log id ever committed: each must stay in the log until purged.
    ever_committed: BTreeMap<u64, LogId>,
}

impl Model {
    fn last_index(&self) -> Option<u64> {
        self.entries.keys().next_back().copied().or(self.purged.map(|p| p.index))
    }

    fn next_entries(
        &mut self,
        n: usize,
        new_term: bool,
        membership: bool,
        value: usize,
    ) -> Vec<Entry> {
        if new_term || self.term == 0 {
            self.term += 1;
        }
        let first = self.last_index().map_or(0, |l| l + 1);
        (first..first + n as u64)
            .map(|index| {
                let log_id = LogId::new(CommittedLeaderId::new(self.term, 1), index);
                let payload = if membership && index == first + n as u64 - 1 {
                    EntryPayload::Membership(members(index))
                } else {
                    EntryPayload::Normal(Request::Set {
                        key: format!("k{index}"),
                        value: "v".repeat(value),
                    })
                };
                Entry { log_id, payload }
            })
            .collect()
    }

    /// The membership openraft would start with: the last one in the log after
    /// `last_applied`, else the state machine's.
    fn effective_membership(&self) -> (StoredMembership, bool) {
        let applied = self.sm.last_applied.map(|l| l.index);
        let in_log = self.entries.values().rev().find_map(|e| match &e.payload {
            EntryPayload::Membership(m) if applied.is_none_or(|a| e.log_id.index > a) => {
                Some(StoredMembership::new(Some(e.log_id), m.clone()))
            }
            _ => None,
        });
        match in_log {
            Some(m) => (m, true),
            None => (self.sm.last_membership.clone(), false),
        }
    }
}

/// A membership that names the index it was made at, so two are never equal by chance.
fn members(index: u64) -> Membership {
    let node = NodeMeta { name: format!("n{index}"), api_base_url: "http://127.0.0.1:1".into() };
    Membership::new(vec![[1].into()], [(1, node)].into_iter().collect::<BTreeMap<_, _>>())
}

/// One record's size in `log.bin`: `len | crc | JSON entry`.
fn record_size(e: &Entry) -> u64 {
    8 + serde_json::to_vec(e).unwrap().len() as u64
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

struct Store {
    dir: RaftDir,
    log: LogFile,
}

impl Store {
    fn reopen(&mut self) -> Result<(), TestCaseError> {
        // Read-only first: the torn tail (if any) is reported and nothing is written.
        let before = std::fs::read(self.dir.file("log.bin")).unwrap_or_default();
        let ro = self.dir.open_log(OpenMode::ReadOnly).map_err(fail)?;
        prop_assert_eq!(&std::fs::read(self.dir.file("log.bin")).unwrap_or_default(), &before);
        let torn = ro.torn_tail_bytes;
        self.log = self.dir.open_log(OpenMode::Repair).map_err(fail)?;
        prop_assert_eq!(self.log.torn_tail_bytes, torn);
        prop_assert_eq!(file_len(&self.dir.file("log.bin")), before.len() as u64 - torn);
        Ok(())
    }
}

fn fail(e: xp_store::StoreError) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

fn step(s: &mut Store, m: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    let log_path = s.dir.file("log.bin");
    match *op {
        Op::Append { n, new_term, membership, value } => {
            let batch = m.next_entries(n, new_term, membership, value);
            s.log.append(batch.clone()).map_err(fail)?;
            m.entries.extend(batch.into_iter().map(|e| (e.log_id.index, e)));
        }
        Op::Truncate { skip } => {
            let floor = m.committed.map_or(0, |c| c.index + 1);
            let from = m.entries.keys().next().map_or(floor, |&f| f.max(floor)) + skip;
            s.log.truncate(from).map_err(fail)?;
            m.entries.split_off(&from);
        }
        Op::Commit { more } => {
            let from = m.committed.map_or(0, |c| c.index + 1);
            if let Some((_, e)) = m.entries.range(from..=from + more).next_back() {
                s.dir.write_committed(Some(e.log_id)).map_err(fail)?;
                m.committed = Some(e.log_id);
                m.ever_committed
                    .extend(m.entries.range(from..=e.log_id.index).map(|(&i, e)| (i, e.log_id)));
            }
        }
        Op::Snapshot { purge } => {
            let Some(c) = m.committed else { return Ok(()) };
            if m.sm.last_applied >= Some(c) || !m.entries.contains_key(&c.index) {
                return Ok(());
            }
            let applied = m.sm.last_applied.map_or(0, |a| a.index + 1);
            for e in m.entries.range(applied..=c.index).map(|(_, e)| e) {
                if let EntryPayload::Membership(mem) = &e.payload {
                    m.sm.last_membership = StoredMembership::new(Some(e.log_id), mem.clone());
                }
            }
            m.sm.last_applied = Some(c);
            s.dir.write_state_machine(&m.sm).map_err(fail)?;
            s.dir.write_snapshot(&snapshot_of(&m.sm)).map_err(fail)?;
            if purge > 0 {
                s.dir.write_purged(Some(c)).map_err(fail)?;
                m.purged = Some(c);
                m.entries = m.entries.split_off(&(c.index + 1));
                if purge == 1 {
                    s.log.purge(c.index).map_err(fail)?;
                } else {
                    s.reopen()?; // crashed before the log was purged (or compacted)
                }
            }
        }
        Op::InstallSnapshot { ahead } => {
            let at = m.last_index().map_or(0, |l| l + ahead);
            m.term += 1;
            let log_id = LogId::new(CommittedLeaderId::new(m.term, 2), at);
            m.sm = SmFile {
                last_applied: Some(log_id),
                last_membership: StoredMembership::new(Some(log_id), members(at)),
                ..SmFile::default()
            };
            // As raft_impl and openraft do it: state machine, snapshot, committed, purge.
            s.dir.write_state_machine(&m.sm).map_err(fail)?;
            s.dir.write_snapshot(&snapshot_of(&m.sm)).map_err(fail)?;
            s.dir.write_committed(Some(log_id)).map_err(fail)?;
            s.dir.write_purged(Some(log_id)).map_err(fail)?;
            s.log.purge(at).map_err(fail)?;
            m.committed = Some(log_id);
            m.ever_committed.insert(at, log_id);
            m.purged = Some(log_id);
            m.entries.clear();
        }
        Op::CrashInAppend { n, value, at, zeros } => {
            let batch = m.next_entries(n, false, false, value);
            let before = file_len(&log_path);
            s.log.append(batch.clone()).map_err(fail)?;
            let after = file_len(&log_path);
            let cut = before + (at as u64) % (after - before);
            let f = std::fs::OpenOptions::new().write(true).open(&log_path).unwrap();
            f.set_len(cut).unwrap();
            if zeros {
                f.set_len(after).unwrap();
            }
            drop(f);
            let mut end = before;
            for e in batch {
                end += record_size(&e);
                if end > cut {
                    break;
                }
                m.entries.insert(e.log_id.index, e);
            }
            s.reopen()?;
        }
        Op::ZeroTail { len } => {
            let before = file_len(&log_path);
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&log_path)
                .unwrap();
            f.set_len(before + len as u64).unwrap();
            drop(f);
            s.reopen()?;
            prop_assert_eq!(s.log.torn_tail_bytes, len as u64);
        }
        Op::CrashInAtomicWrite { file } => {
            let name = ["committed.json", "purged.json", "state_machine.json", "log.bin"][file];
            std::fs::write(s.dir.file(&format!(".{name}.tmp")), b"{\"half\": ").unwrap();
            s.reopen()?;
        }
        Op::Reopen => s.reopen()?,
    }
    Ok(())
}

fn snapshot_of(sm: &SmFile) -> SnapshotFile {
    let meta = SnapshotMeta {
        last_log_id: sm.last_applied,
        last_membership: sm.last_membership.clone(),
        snapshot_id: format!("{:?}", sm.last_applied.map(|l| l.index)),
    };
    SnapshotFile { meta, state: sm.clone() }
}

/// The store agrees with the model, in memory and read back from disk.
fn check(s: &Store, m: &Model) -> Result<(), TestCaseError> {
    let ids =
        |log: &LogFile| log.iter().map(|e| serde_json::to_string(e).unwrap()).collect::<Vec<_>>();
    let expected: Vec<_> = m.entries.values().map(|e| serde_json::to_string(e).unwrap()).collect();
    prop_assert_eq!(ids(&s.log), expected.clone(), "in memory");
    let disk = s.dir.open_log(OpenMode::ReadOnly).map_err(fail)?;
    prop_assert_eq!(ids(&disk), expected, "read back");
    prop_assert_eq!(disk.torn_tail_bytes, 0);
    prop_assert_eq!(s.dir.read_committed().map_err(fail)?, m.committed);
    prop_assert_eq!(s.dir.read_purged().map_err(fail)?, m.purged);
    let purged = m.purged.map(|p| p.index);
    for (&index, &id) in &m.ever_committed {
        if purged.is_none_or(|p| index > p) {
            let found = disk.get(index).map(|e| e.log_id);
            prop_assert_eq!(found, Some(id), "committed entry {} lost", index);
        }
    }
    let sm = s.dir.read_state_machine().map_err(fail)?.unwrap_or_default();
    prop_assert_eq!(&sm, &m.sm);
    prop_assert_eq!(xp_store::effective_membership(&disk, &sm), m.effective_membership());
    Ok(())
}

/// Where to put the dirs: tmpfs when there is one (thousands of fsyncs per run).
fn tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let tmp = tempdir();
    let dir = RaftDir::new(tmp.path().join("raft"));
    dir.create().map_err(fail)?;
    let log = dir.open_log(OpenMode::Repair).map_err(fail)?;
    let mut store = Store { dir, log };
    let mut model = Model::default();
    for (i, op) in ops.iter().enumerate() {
        step(&mut store, &mut model, op)
            .map_err(|e| TestCaseError::fail(format!("step {i} {op:?}: {e}")))?;
        check(&store, &model)
            .map_err(|e| TestCaseError::fail(format!("after step {i} {op:?}: {e}")))?;
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000)
}

/// The run's seed: `PROPTEST_RNG_SEED` replays one; otherwise a fresh one, printed (a failing
/// test shows its output).
fn seed() -> u64 {
    let seed = std::env::var("PROPTEST_RNG_SEED").ok().and_then(|v| v.parse().ok());
    let seed = seed.unwrap_or_else(|| {
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new().build_hasher().finish()
    });
    println!("seed {seed}: PROPTEST_RNG_SEED={seed} replays this run");
    seed
}

proptest! {
    // A failure also saves its case's seed beside this file (`model.proptest-regressions`,
    // replayed first on the next run).
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        rng_seed: RngSeed::Fixed(seed()),
        ..ProptestConfig::with_cases(cases())
    })]

    #[test]
    fn the_store_agrees_with_its_model(ops in prop::collection::vec(op(), 1..30)) {
        run(&ops)?;
    }
}
