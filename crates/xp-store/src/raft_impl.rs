//! openraft 0.9 storage-v2 adapters (`RaftLogStorage`, `RaftStateMachine`) over [`RaftDir`].

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload as EP, OptionalSend, RaftLogReader, RaftSnapshotBuilder, StorageIOError,
};

use crate::log::{LogFile, OpenMode};
use crate::state::{RaftDir, SmFile, SnapshotFile};
use crate::types::*;
use crate::StoreError;

struct LogInner {
    dir: RaftDir,
    log: LogFile,
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
}

/// The log and vote store; cheap to clone (replication tasks each hold a reader).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<LogInner>>,
}

/// The state machine and snapshot store. `state` is shared with the node's HTTP handlers,
/// which read the KV data from it.
///
/// The state lives in memory; `state_machine.json` is rewritten (atomically) when a batch
/// applies a membership change, every [`FLUSH_EVERY`] applied entries, before a snapshot is
/// written, and on [`StateMachineStore::flush`] at shutdown. It may therefore lag the log: on
/// start openraft re-applies the committed entries after its `last_applied` (`committed.json`
/// says how far). Invariant: `state_machine.json` is never behind `snapshot.json`, and the log
/// is purged only up to the snapshot, so every entry it lacks is still in the log.
#[derive(Clone)]
pub struct StateMachineStore {
    dir: RaftDir,
    pub state: Arc<RwLock<SmFile>>,
    snapshot_seq: Arc<AtomicU64>,
    flushed: Arc<Mutex<Flushed>>,
    /// Held while `snapshot.json` is written, with the last log id it holds: a snapshot built
    /// in the background from an older state must not replace a newer installed one.
    snapshot_on_disk: Arc<Mutex<Option<LogId>>>,
}

/// How many applied entries `state_machine.json` may lag before it is rewritten. Bounds the
/// work replayed on start; rewriting on every batch made each write O(keys).
pub const FLUSH_EVERY: u64 = 1000;

/// What `state_machine.json` holds, and how many entries have been applied since.
struct Flushed {
    on_disk: Option<LogId>,
    pending: u64,
}

/// Runs file work of the size of the whole state (serialising and fsyncing
/// `state_machine.json` or `snapshot.json`, tens of MB with large values) without stalling the
/// other tasks of the runtime worker it is called on: with a 50 ms heartbeat, a worker blocked
/// for a few hundred ms let followers call elections. Plain call outside a multi-thread runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Opens the store for a running node: refuses if a recovery is unfinished, cuts a torn log
/// tail, and loads everything into memory.
pub fn open_raft_store(dir: &RaftDir) -> Result<(LogStore, StateMachineStore), StoreError> {
    dir.create()?;
    dir.check_no_recovery_in_progress()?;
    let purged = dir.read_purged()?;
    let log = dir.open_log(OpenMode::Repair)?;
    let inner = LogInner {
        dir: dir.clone(),
        log,
        vote: dir.read_vote()?,
        committed: dir.read_committed()?,
        purged,
    };
    let sm = dir.read_state_machine()?.unwrap_or_default();
    dir.check_committed_present(&inner.log, &sm)?;
    let flushed = Flushed { on_disk: sm.last_applied, pending: 0 };
    let snapshot_on_disk = dir.read_snapshot()?.and_then(|s| s.meta.last_log_id);
    Ok((
        LogStore { inner: Arc::new(Mutex::new(inner)) },
        StateMachineStore {
            dir: dir.clone(),
            state: Arc::new(RwLock::new(sm)),
            snapshot_seq: Arc::new(AtomicU64::new(0)),
            flushed: Arc::new(Mutex::new(flushed)),
            snapshot_on_disk: Arc::new(Mutex::new(snapshot_on_disk)),
        },
    ))
}

impl LogStore {
    /// The membership openraft will start with, given the state machine `sm` loaded beside
    /// this log (see [`crate::effective_membership`]).
    pub fn effective_membership(&self, sm: &SmFile) -> StoredMembership {
        crate::state::effective_membership(&self.inner.lock().unwrap().log, sm).0
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self.inner.lock().unwrap().log.range(range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let inner = self.inner.lock().unwrap();
        let last = inner.log.last_log_id().or(inner.purged);
        Ok(LogState { last_purged_log_id: inner.purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let mut inner = self.inner.lock().unwrap();
        inner.dir.write_vote(vote).map_err(|e| StorageIOError::write_vote(&e))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.inner.lock().unwrap().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let mut inner = self.inner.lock().unwrap();
        if inner.committed == committed {
            return Ok(());
        }
        inner.dir.write_committed(committed).map_err(|e| StorageIOError::write(&e))?;
        inner.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.inner.lock().unwrap().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let res = self.inner.lock().unwrap().log.append(entries);
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let msg = e.to_string();
                callback.log_io_completed(Err(std::io::Error::other(msg.clone())));
                Err(StorageIOError::write_logs(&std::io::Error::other(msg)).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut inner = self.inner.lock().unwrap();
        inner.log.truncate(log_id.index).map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut inner = self.inner.lock().unwrap();
        // Record the purge point first: a crash after it leaves extra records that open() skips.
        inner.dir.write_purged(Some(log_id)).map_err(|e| StorageIOError::write_logs(&e))?;
        inner.purged = Some(log_id);
        inner.log.purge(log_id.index).map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }
}

impl StateMachineStore {
    /// Writes the in-memory state to `state_machine.json` if it is ahead of the file. The node
    /// calls it at shutdown; it is also called before every snapshot is written.
    pub fn flush(&self) -> Result<(), StoreError> {
        let mut flushed = self.flushed.lock().unwrap();
        let (last_applied, bytes) = {
            let state = self.state.read().unwrap();
            if state.last_applied <= flushed.on_disk {
                return Ok(());
            }
            (state.last_applied, crate::fsutil::json_bytes(&*state))
        };
        crate::fsutil::atomic_write(&self.dir.state_machine_path(), &bytes)?;
        *flushed = Flushed { on_disk: last_applied, pending: 0 };
        Ok(())
    }

    fn snapshot_from(&self, state: SmFile) -> Result<Snapshot<TypeConfig>, StorageError> {
        let meta = SnapshotMeta {
            last_log_id: state.last_applied,
            last_membership: state.last_membership.clone(),
            snapshot_id: format!(
                "{}-{}",
                state.last_applied.map(|l| l.index).unwrap_or(0),
                self.snapshot_seq.fetch_add(1, Ordering::Relaxed)
            ),
        };
        let bytes = serde_json::to_vec(&state).expect("state serializes");
        let file = SnapshotFile { meta: meta.clone(), state };
        // The state machine file first: it must never be behind the snapshot (logs up to the
        // snapshot may be purged once it exists).
        self.flush().map_err(|e| StorageIOError::write_state_machine(&e))?;
        let mut on_disk = self.snapshot_on_disk.lock().unwrap();
        if meta.last_log_id >= *on_disk {
            self.dir
                .write_snapshot(&file)
                .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
            *on_disk = meta.last_log_id;
        } else {
            // A snapshot was installed while this one was being built: keep the newer one.
            tracing::debug!(built = ?meta.last_log_id, kept = ?*on_disk, "not replacing a newer snapshot");
        }
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        blocking(|| {
            let state = self.state.read().unwrap().clone();
            self.snapshot_from(state)
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let s = self.state.read().unwrap();
        Ok((s.last_applied, s.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        let mut membership_changed = false;
        {
            // Applying is pure and cannot fail, so it mutates the shared state in place.
            let mut state = self.state.write().unwrap();
            for entry in entries {
                state.last_applied = Some(entry.log_id);
                match entry.payload {
                    EP::Blank => out.push(Response::Ok),
                    EP::Normal(ref req) => {
                        let membership = state.last_membership.membership().clone();
                        out.push(state.data.apply(req, &membership));
                    }
                    EP::Membership(m) => {
                        state.data.bump_past(&m);
                        state.last_membership = StoredMembership::new(Some(entry.log_id), m);
                        membership_changed = true;
                        out.push(Response::Ok);
                    }
                }
            }
        }
        let due = {
            let mut flushed = self.flushed.lock().unwrap();
            flushed.pending += out.len() as u64;
            flushed.pending >= FLUSH_EVERY
        };
        if membership_changed || due {
            blocking(|| self.flush()).map_err(|e| StorageIOError::write_state_machine(&e))?;
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        blocking(|| {
            let mut state: SmFile = serde_json::from_slice(snapshot.get_ref())
                .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
            state.last_applied = meta.last_log_id;
            state.last_membership = meta.last_membership.clone();
            let file = SnapshotFile { meta: meta.clone(), state: state.clone() };
            let mut flushed = self.flushed.lock().unwrap();
            let mut on_disk = self.snapshot_on_disk.lock().unwrap();
            // The state machine file first, so it is never behind the snapshot (a crash between the
            // two leaves a state machine ahead of an older snapshot, which is allowed).
            self.dir
                .write_state_machine(&state)
                .map_err(|e| StorageIOError::write_state_machine(&e))?;
            *flushed = Flushed { on_disk: state.last_applied, pending: 0 };
            self.dir
                .write_snapshot(&file)
                .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
            *on_disk = meta.last_log_id;
            drop(on_disk);
            *self.state.write().unwrap() = state;
            Ok(())
        })
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        blocking(|| {
            let file =
                self.dir.read_snapshot().map_err(|e| StorageIOError::read_snapshot(None, &e))?;
            Ok(file.map(|f| {
                let bytes = serde_json::to_vec(&f.state).expect("state serializes");
                Snapshot { meta: f.meta, snapshot: Box::new(Cursor::new(bytes)) }
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn state_at(index: u64) -> SmFile {
        let mut s = SmFile {
            last_applied: Some(LogId::new(CommittedLeaderId::new(1, 1), index)),
            ..Default::default()
        };
        s.data.kv.insert("at".into(), index.to_string());
        s
    }

    /// A snapshot built in the background from an older state finishes after a newer one was
    /// installed: the installed one stays, and the state machine file is never behind it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_older_built_snapshot_never_replaces_a_newer_installed_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RaftDir::new(tmp.path().join("raft"));
        let (_log, mut sm) = open_raft_store(&dir).unwrap();
        let old = state_at(40);
        let new = state_at(50);
        let meta = SnapshotMeta {
            last_log_id: new.last_applied,
            last_membership: new.last_membership.clone(),
            snapshot_id: "installed".into(),
        };
        let bytes = serde_json::to_vec(&new).unwrap();
        sm.install_snapshot(&meta, Box::new(Cursor::new(bytes))).await.unwrap();
        sm.snapshot_from(old).unwrap();
        let on_disk = dir.read_snapshot().unwrap().unwrap();
        assert_eq!(on_disk.meta.snapshot_id, "installed");
        assert_eq!(on_disk.state.data.kv["at"], "50");
        let sm_file = dir.read_state_machine().unwrap().unwrap();
        assert!(sm_file.last_applied >= on_disk.meta.last_log_id);
        // A newer build does replace it.
        sm.snapshot_from(state_at(60)).unwrap();
        assert_eq!(dir.read_snapshot().unwrap().unwrap().meta.last_log_id.unwrap().index, 60);
    }
}
