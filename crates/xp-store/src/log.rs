//! The append-only Raft log file `log.bin`.
//!
//! Each record is `len: u32 LE | crc32(payload): u32 LE | payload`, the payload being one JSON
//! entry. Appends write only the new records and fsync. Truncation cuts the file at the first
//! removed record. A record cut short or failing its checksum at the very end of the file is a
//! torn write from a crash: it is cut off when the log is opened for writing (and reported, not
//! touched, when it is opened read-only). A bad record followed by more data is corruption and
//! refuses to open. Purging only records the purge point in `purged.json`; the file is
//! compacted (rewritten atomically) once enough of it is purged, or at once when nothing live
//! is left (a follower that installed a snapshot past the end of its log).
//!
//! Only live records (above the purge point) must have consecutive indexes, the first one
//! right after the purge point: purged ("dead") records still in the file may be followed by
//! a record far ahead of them (a snapshot was installed past them before a compaction).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::fsutil::{atomic_write, fsync_dir};
use crate::types::{Entry, LogId};
use crate::StoreError;

const HEADER: usize = 8;
/// Compact the file once this many purged records sit at its head.
const COMPACT_AFTER: usize = 4096;

/// How to treat a torn tail when opening.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Cut a torn tail off the file (the node, and `xp-ops` before writing).
    Repair,
    /// Change nothing; report the torn tail (inspect, dry-run).
    ReadOnly,
}

/// The log file and an in-memory index of its live entries.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: Option<File>,
    /// Live entries (above the purge point) with the file offset of their record.
    entries: BTreeMap<u64, (u64, Entry)>,
    /// Records in the file at or below the purge point.
    dead_records: usize,
    /// The purge point's index: the first live entry must follow it.
    purged: Option<u64>,
    /// File length in bytes (end of the last good record).
    len: u64,
    /// Bytes of a torn tail found (and, in repair mode, removed) on open.
    pub torn_tail_bytes: u64,
    /// Test-only fault injection (see [`FAULT_ENV`]): appends left before each one fails.
    fail_after: Option<u64>,
}

/// Test-only fault injection: `XP_FAULT_LOG_APPENDS=N` makes every append after the first `N`
/// (counted from when the log was opened) fail as a full disk would, so tests can check what
/// the node does when its storage fails. Never set it in production.
pub const FAULT_ENV: &str = "XP_FAULT_LOG_APPENDS";

impl LogFile {
    /// Opens (creating in repair mode) the log and indexes entries above `purged`.
    pub fn open(dir: &Path, purged: Option<LogId>, mode: OpenMode) -> Result<LogFile, StoreError> {
        let path = dir.join("log.bin");
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes).map_err(StoreError::io(&path))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::Io { path, source: e }),
        }
        let purged_index = purged.map(|l| l.index);
        let mut entries = BTreeMap::new();
        let mut dead_records = 0;
        let mut pos = 0usize;
        let mut prev: Option<u64> = None;
        while pos < bytes.len() {
            let rest = &bytes[pos..];
            let torn = |why: &str| -> Result<(), StoreError> {
                Err(StoreError::corrupt(&path, format!("bad record at byte {pos}: {why}")))
            };
            if rest.len() < HEADER {
                break; // torn header at the tail
            }
            let len = u32::from_le_bytes(rest[0..4].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(rest[4..8].try_into().unwrap());
            if rest.len() < HEADER + len {
                break; // torn payload at the tail
            }
            let payload = &rest[HEADER..HEADER + len];
            if crc32fast::hash(payload) != crc {
                if rest.len() == HEADER + len {
                    break; // the last record is torn
                }
                torn("checksum mismatch with more records after it")?;
            }
            let entry: Entry = match serde_json::from_slice(payload) {
                Ok(e) => e,
                Err(e) => {
                    return torn(&format!("checksum ok but not an entry: {e}"))
                        .map(|_| unreachable!())
                }
            };
            let index = entry.log_id.index;
            if purged_index.is_some_and(|pi| index <= pi) {
                dead_records += 1;
            } else {
                // The first live record follows the purge point; each next one follows it.
                if let Some(p) = prev.or(purged_index) {
                    if index != p + 1 {
                        let what = if prev.is_some() { "entry" } else { "the purge point" };
                        torn(&format!("entry {index} follows {what} {p}"))?;
                    }
                }
                prev = Some(index);
                entries.insert(index, (pos as u64, entry));
            }
            pos += HEADER + len;
        }
        let torn_tail_bytes = (bytes.len() - pos) as u64;
        let file = match mode {
            OpenMode::ReadOnly => None,
            OpenMode::Repair => {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
                    .map_err(StoreError::io(&path))?;
                if torn_tail_bytes > 0 {
                    tracing::warn!(
                        path = %path.display(),
                        bytes = torn_tail_bytes,
                        "cutting a torn record off the end of the Raft log (a write interrupted by a crash)"
                    );
                    f.set_len(pos as u64).map_err(StoreError::io(&path))?;
                    f.sync_all().map_err(StoreError::io(&path))?;
                }
                fsync_dir(dir)?;
                Some(f)
            }
        };
        Ok(LogFile {
            path,
            file,
            entries,
            dead_records,
            purged: purged_index,
            len: pos as u64,
            torn_tail_bytes,
            fail_after: std::env::var(FAULT_ENV).ok().and_then(|v| v.parse().ok()),
        })
    }

    /// The last entry's log id, if any entry is live.
    pub fn last_log_id(&self) -> Option<LogId> {
        self.entries.values().next_back().map(|(_, e)| e.log_id)
    }

    pub fn first_index(&self) -> Option<u64> {
        self.entries.keys().next().copied()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Live entries in `range`, in order.
    pub fn range(&self, range: impl std::ops::RangeBounds<u64>) -> Vec<Entry> {
        self.entries.range(range).map(|(_, (_, e))| e.clone()).collect()
    }

    pub fn get(&self, index: u64) -> Option<&Entry> {
        self.entries.get(&index).map(|(_, e)| e)
    }

    /// Iterates live entries in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Entry> {
        self.entries.values().map(|(_, e)| e)
    }

    fn writer(&mut self) -> &mut File {
        self.file.as_mut().expect("log opened read-only cannot be written")
    }

    /// Appends entries and fsyncs. They must continue the log without a hole.
    pub fn append(&mut self, entries: impl IntoIterator<Item = Entry>) -> Result<(), StoreError> {
        let mut buf = Vec::new();
        let mut new = Vec::new();
        let mut offset = self.len;
        for entry in entries {
            let prev = new
                .last()
                .map(|(_, e): &(u64, Entry)| e.log_id.index)
                .or(self.last_log_id().map(|l| l.index))
                .or(self.purged);
            if let Some(last) = prev {
                if entry.log_id.index != last + 1 {
                    return Err(StoreError::corrupt(
                        &self.path,
                        format!(
                            "append of entry {} after entry {last} would leave a hole",
                            entry.log_id.index
                        ),
                    ));
                }
            }
            let payload = serde_json::to_vec(&entry).expect("entries serialize");
            buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            buf.extend_from_slice(&payload);
            new.push((offset, entry));
            offset = self.len + buf.len() as u64;
        }
        if buf.is_empty() {
            return Ok(());
        }
        if let Some(left) = self.fail_after.as_mut() {
            if *left == 0 {
                let e = std::io::Error::other(format!(
                    "No space left on device (injected by {FAULT_ENV})"
                ));
                return Err(StoreError::Io { path: self.path.clone(), source: e });
            }
            *left -= 1;
        }
        let path = self.path.clone();
        let len = self.len;
        let f = self.writer();
        f.seek(SeekFrom::Start(len)).map_err(StoreError::io(&path))?;
        f.write_all(&buf).map_err(StoreError::io(&path))?;
        f.sync_data().map_err(StoreError::io(&path))?;
        self.len += buf.len() as u64;
        for (off, e) in new {
            self.entries.insert(e.log_id.index, (off, e));
        }
        Ok(())
    }

    /// Removes entries with index >= `from` (a conflicting suffix).
    pub fn truncate(&mut self, from: u64) -> Result<(), StoreError> {
        let Some((&first, &(offset, _))) = self.entries.range(from..).next() else {
            return Ok(());
        };
        let path = self.path.clone();
        let f = self.writer();
        f.set_len(offset).map_err(StoreError::io(&path))?;
        f.sync_all().map_err(StoreError::io(&path))?;
        self.len = offset;
        self.entries.split_off(&first);
        Ok(())
    }

    /// Drops entries up to `upto` from memory (the caller has already saved the purge point) and
    /// compacts the file when enough of it is dead.
    pub fn purge(&mut self, upto: u64) -> Result<(), StoreError> {
        let keep = self.entries.split_off(&(upto + 1));
        self.dead_records += self.entries.len();
        self.entries = keep;
        self.purged = self.purged.max(Some(upto));
        // Nothing live left (a snapshot installed past the end of the log): compacting costs
        // nothing now and leaves no dead records for the next append to follow.
        if self.dead_records >= COMPACT_AFTER || (self.entries.is_empty() && self.len > 0) {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the file with only live records, atomically.
    fn compact(&mut self) -> Result<(), StoreError> {
        let mut buf = Vec::new();
        let mut entries = BTreeMap::new();
        for (index, (_, e)) in std::mem::take(&mut self.entries) {
            let payload = serde_json::to_vec(&e).expect("entries serialize");
            let off = buf.len() as u64;
            buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            buf.extend_from_slice(&payload);
            entries.insert(index, (off, e));
        }
        atomic_write(&self.path, &buf)?;
        self.file = Some(
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&self.path)
                .map_err(StoreError::io(&self.path))?,
        );
        self.entries = entries;
        self.len = buf.len() as u64;
        self.dead_records = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{EntryPayload, Request};
    use openraft::CommittedLeaderId;

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Request::Set {
                key: format!("k{index}"),
                value: "v".into(),
            }),
        }
    }

    fn indexes(log: &LogFile) -> Vec<u64> {
        log.iter().map(|e| e.log_id.index).collect()
    }

    #[test]
    fn append_reopen_truncate_purge() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogFile::open(dir.path(), None, OpenMode::Repair).unwrap();
        log.append((1..=5).map(|i| entry(1, i))).unwrap();
        log.truncate(4).unwrap();
        log.append([entry(2, 4)]).unwrap();
        // A batch after existing entries (the case a follower catching up hits).
        log.append((5..=8).map(|i| entry(2, i))).unwrap();
        log.truncate(5).unwrap();
        drop(log);
        let mut log = LogFile::open(dir.path(), None, OpenMode::Repair).unwrap();
        assert_eq!(indexes(&log), [1, 2, 3, 4]);
        assert_eq!(log.last_log_id().unwrap().leader_id.term, 2);
        log.purge(2).unwrap();
        assert_eq!(indexes(&log), [3, 4]);
        let purged = Some(LogId::new(CommittedLeaderId::new(1, 1), 2));
        let log = LogFile::open(dir.path(), purged, OpenMode::ReadOnly).unwrap();
        assert_eq!(indexes(&log), [3, 4]);
    }

    /// A follower that installs a snapshot past the end of its log purges every entry it has,
    /// then appends after the snapshot. Before the fix the reopened log refused: "entry 41
    /// follows entry 15".
    #[test]
    fn a_purge_past_the_end_then_appends_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let purged = Some(LogId::new(CommittedLeaderId::new(1, 1), 40));
        let mut log = LogFile::open(dir.path(), None, OpenMode::Repair).unwrap();
        log.append((1..=15).map(|i| entry(1, i))).unwrap();
        log.purge(40).unwrap();
        let err = log.append([entry(1, 40)]).unwrap_err().to_string();
        assert!(err.ends_with("append of entry 40 after entry 40 would leave a hole"), "{err}");
        log.append((41..=45).map(|i| entry(1, i))).unwrap();
        drop(log);
        for mode in [OpenMode::ReadOnly, OpenMode::Repair] {
            let log = LogFile::open(dir.path(), purged, mode).unwrap();
            assert_eq!(indexes(&log), [41, 42, 43, 44, 45]);
        }
        // A crash before the compaction: dead records 1..=15 still in the file, then 41...
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogFile::open(dir.path(), None, OpenMode::Repair).unwrap();
        log.append((1..=15).map(|i| entry(1, i))).unwrap();
        drop(log);
        let mut log = LogFile::open(dir.path(), purged, OpenMode::Repair).unwrap();
        assert!(log.is_empty());
        log.append((41..=42).map(|i| entry(1, i))).unwrap();
        drop(log);
        let log = LogFile::open(dir.path(), purged, OpenMode::Repair).unwrap();
        assert_eq!(indexes(&log), [41, 42]);
        // ...but a live record that does not follow the purge point is corruption.
        let early = Some(LogId::new(CommittedLeaderId::new(1, 1), 10));
        let err = LogFile::open(dir.path(), early, OpenMode::ReadOnly).unwrap_err().to_string();
        assert!(err.contains("entry 41 follows entry 15"), "{err}");
    }

    #[test]
    fn a_hole_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogFile::open(dir.path(), None, OpenMode::Repair).unwrap();
        log.append([entry(1, 1)]).unwrap();
        let err = log.append([entry(1, 3)]).unwrap_err().to_string();
        assert!(err.ends_with("append of entry 3 after entry 1 would leave a hole"), "{err}");
    }

    #[test]
    fn torn_tail_is_cut_in_repair_mode_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogFile::open(dir.path(), None, OpenMode::Repair).unwrap();
        log.append((1..=3).map(|i| entry(1, i))).unwrap();
        drop(log);
        let path = dir.path().join("log.bin");
        let full = std::fs::read(&path).unwrap();
        // Every possible crash point inside the last record.
        let last_start = {
            let log = LogFile::open(dir.path(), None, OpenMode::ReadOnly).unwrap();
            log.entries[&3].0 as usize
        };
        for cut in last_start + 1..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            let ro = LogFile::open(dir.path(), None, OpenMode::ReadOnly).unwrap();
            assert_eq!(indexes(&ro), [1, 2]);
            assert_eq!(ro.torn_tail_bytes, (cut - last_start) as u64);
            assert_eq!(std::fs::read(&path).unwrap().len(), cut, "read-only must not write");
            let rw = LogFile::open(dir.path(), None, OpenMode::Repair).unwrap();
            assert_eq!(indexes(&rw), [1, 2]);
            assert_eq!(std::fs::read(&path).unwrap().len(), last_start);
        }
    }

    #[test]
    fn corruption_in_the_middle_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogFile::open(dir.path(), None, OpenMode::Repair).unwrap();
        log.append((1..=3).map(|i| entry(1, i))).unwrap();
        drop(log);
        let path = dir.path().join("log.bin");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER + 2] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let err = LogFile::open(dir.path(), None, OpenMode::Repair).unwrap_err().to_string();
        assert!(
            err.contains("corrupt Raft state: bad record at byte 0: checksum mismatch"),
            "{err}"
        );
    }
}
