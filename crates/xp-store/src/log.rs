//! The append-only Raft log file `log.bin`.
//!
//! Each record is `len: u32 LE | crc32(payload): u32 LE | payload`, the payload being one JSON
//! entry. Appends write only the new records and fsync. Truncation cuts the file at the first
//! removed record. Purging only records the purge point in `purged.json`; the file is
//! compacted (rewritten atomically) once enough of it is purged, or at once when nothing live
//! is left (a follower that installed a snapshot past the end of its log).
//!
//! **Torn tail or corruption.** Opening reads records from the start until the first bad one:
//! a header cut short, a length of 0 or running past the end of the file, or a checksum
//! mismatch. From there on, the bytes are a *torn tail*, the remains of one append a crash
//! interrupted (a prefix of what was written, possibly followed by garbage or zeros: after a
//! power cut some filesystems keep the grown size but not the data), if and only if both hold:
//!
//! 1. no valid record starts anywhere after the bad one (a checksum-matching entry whose index
//!    is above the last good record's): a log that resumes after damage was damaged in its
//!    middle, whatever the damage looks like (a flipped bit in a length that now points past
//!    the end of the file included);
//! 2. nothing committed is in it: the last good record, or the purge point if later, is at or
//!    above `committed.json`'s index. Appends are fsynced before they count, so a committed
//!    entry is never in an interrupted append; one missing means the disk lost data.
//!
//! A torn tail is cut when the log is opened for writing ([`OpenMode::Repair`]) and reported,
//! not touched, when it is opened read-only. Anything else, and a record whose checksum matches
//! but which holds no entry, or whose index does not follow the one before, is corruption: the
//! log refuses to open in either mode, naming the file, the byte offset and what is wrong, and
//! sends the operator to another survivor or a backup. A whole last record that fails its
//! checksum cannot be told from a torn append, so it is cut unless committed.
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
    ///
    /// `committed` is the last committed log id (`committed.json`): a damaged tail that would
    /// take an entry at or below it is refused, never cut (see the module doc for the rule).
    pub fn open(
        dir: &Path,
        purged: Option<LogId>,
        committed: Option<LogId>,
        mode: OpenMode,
    ) -> Result<LogFile, StoreError> {
        let path = dir.join("log.bin");
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes).map_err(StoreError::io(&path))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::Io { path, source: e }),
        }
        let corrupt = |pos: usize, why: String| {
            StoreError::corrupt(&path, format!("bad record at byte {pos}: {why}; {WAY_OUT}"))
        };
        let purged_index = purged.map(|l| l.index);
        let mut entries = BTreeMap::new();
        let mut dead_records = 0;
        let mut pos = 0usize;
        // The last live entry's index, and the last record's (live or dead).
        let mut prev: Option<u64> = None;
        let mut prev_record: Option<u64> = None;
        while pos < bytes.len() {
            let (entry, size) = match parse(&bytes[pos..]) {
                Parsed::Entry(entry, size) => (entry, size),
                Parsed::NotAnEntry(e) => {
                    return Err(corrupt(pos, format!("checksum ok but not an entry: {e}")))
                }
                Parsed::Bad(why) => {
                    // Torn or corrupt: the rule is in the module doc.
                    if let Some((at, index)) = next_valid_record(&bytes, pos + 1, prev_record) {
                        return Err(corrupt(
                            pos,
                            format!(
                                "{why}, yet a valid record (entry {index}) starts at byte {at} \
                                 after it: the log is damaged in its middle, not cut short by a crash"
                            ),
                        ));
                    }
                    let kept = prev_record.max(purged_index);
                    if let Some(c) = committed.filter(|c| kept.is_none_or(|k| c.index > k)) {
                        let kept = kept.map_or_else(|| "none".to_owned(), |k| k.to_string());
                        return Err(corrupt(
                            pos,
                            format!(
                                "{why}; cutting the {} bytes from there would lose committed \
                                 entries (committed up to entry {}, last intact entry {kept})",
                                bytes.len() - pos,
                                c.index
                            ),
                        ));
                    }
                    break;
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
                        return Err(corrupt(pos, format!("entry {index} follows {what} {p}")));
                    }
                }
                prev = Some(index);
                entries.insert(index, (pos as u64, entry));
            }
            prev_record = Some(index);
            pos += size;
        }
        let torn_tail_bytes = (bytes.len() - pos) as u64;
        let file = match mode {
            OpenMode::ReadOnly => None,
            OpenMode::Repair => {
                let f = crate::fsutil::private_file()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
                    .map_err(StoreError::io(&path))?;
                if torn_tail_bytes > 0 {
                    tracing::warn!(
                        path = %path.display(),
                        offset = pos,
                        bytes = torn_tail_bytes,
                        "cutting a torn tail off the Raft log (an append interrupted by a crash; nothing committed)"
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

/// What a refusal tells the operator to do.
const WAY_OUT: &str =
    "recover another survivor (xp-ops xp inspect on each), or restore a backup (xp-ops xp restore)";

/// One record read at the start of a byte slice.
enum Parsed {
    /// A whole record holding an entry, and the record's size in bytes.
    Entry(Entry, usize),
    /// Not a whole record with a matching checksum: torn or damaged (the rule decides which).
    Bad(String),
    /// The checksum matches but the payload is not an entry: never a torn write.
    NotAnEntry(serde_json::Error),
}

fn parse(rest: &[u8]) -> Parsed {
    if rest.len() < HEADER {
        return Parsed::Bad(format!("its header is cut short ({} of {HEADER} bytes)", rest.len()));
    }
    let len = u32::from_le_bytes(rest[0..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(rest[4..8].try_into().unwrap());
    // An entry is never empty; eight zero bytes would otherwise pass the checksum.
    if len == 0 {
        return Parsed::Bad("its length 0 is not a record's (zeros?)".into());
    }
    let left = rest.len() - HEADER;
    if left < len {
        return Parsed::Bad(format!(
            "its length {len} runs past the end of the file ({left} bytes follow its header)"
        ));
    }
    let payload = &rest[HEADER..HEADER + len];
    if crc32fast::hash(payload) != crc {
        return Parsed::Bad("checksum mismatch".into());
    }
    match serde_json::from_slice(payload) {
        Ok(entry) => Parsed::Entry(entry, HEADER + len),
        Err(e) => Parsed::NotAnEntry(e),
    }
}

/// The first offset at or after `from` where a whole valid record starts whose entry comes
/// after entry `after`, and that entry's index: proof that the log goes on past a bad record.
fn next_valid_record(bytes: &[u8], from: usize, after: Option<u64>) -> Option<(usize, u64)> {
    (from..bytes.len()).find_map(|at| {
        // Every payload is a JSON object: skip the checksum everywhere else (a long garbage
        // tail is scanned at every byte).
        if bytes.get(at + HEADER) != Some(&b'{') {
            return None;
        }
        match parse(&bytes[at..]) {
            Parsed::Entry(e, _) if after.is_none_or(|a| e.log_id.index > a) => {
                Some((at, e.log_id.index))
            }
            _ => None,
        }
    })
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
        let mut log = LogFile::open(dir.path(), None, None, OpenMode::Repair).unwrap();
        log.append((1..=5).map(|i| entry(1, i))).unwrap();
        log.truncate(4).unwrap();
        log.append([entry(2, 4)]).unwrap();
        // A batch after existing entries (the case a follower catching up hits).
        log.append((5..=8).map(|i| entry(2, i))).unwrap();
        log.truncate(5).unwrap();
        drop(log);
        let mut log = LogFile::open(dir.path(), None, None, OpenMode::Repair).unwrap();
        assert_eq!(indexes(&log), [1, 2, 3, 4]);
        assert_eq!(log.last_log_id().unwrap().leader_id.term, 2);
        log.purge(2).unwrap();
        assert_eq!(indexes(&log), [3, 4]);
        let purged = Some(LogId::new(CommittedLeaderId::new(1, 1), 2));
        let log = LogFile::open(dir.path(), purged, None, OpenMode::ReadOnly).unwrap();
        assert_eq!(indexes(&log), [3, 4]);
    }

    /// A follower that installs a snapshot past the end of its log purges every entry it has,
    /// then appends after the snapshot. Before the fix the reopened log refused: "entry 41
    /// follows entry 15".
    #[test]
    fn a_purge_past_the_end_then_appends_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let purged = Some(LogId::new(CommittedLeaderId::new(1, 1), 40));
        let mut log = LogFile::open(dir.path(), None, None, OpenMode::Repair).unwrap();
        log.append((1..=15).map(|i| entry(1, i))).unwrap();
        log.purge(40).unwrap();
        let err = log.append([entry(1, 40)]).unwrap_err().to_string();
        assert!(err.ends_with("append of entry 40 after entry 40 would leave a hole"), "{err}");
        log.append((41..=45).map(|i| entry(1, i))).unwrap();
        drop(log);
        for mode in [OpenMode::ReadOnly, OpenMode::Repair] {
            let log = LogFile::open(dir.path(), purged, None, mode).unwrap();
            assert_eq!(indexes(&log), [41, 42, 43, 44, 45]);
        }
        // A crash before the compaction: dead records 1..=15 still in the file, then 41...
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogFile::open(dir.path(), None, None, OpenMode::Repair).unwrap();
        log.append((1..=15).map(|i| entry(1, i))).unwrap();
        drop(log);
        let mut log = LogFile::open(dir.path(), purged, None, OpenMode::Repair).unwrap();
        assert!(log.is_empty());
        log.append((41..=42).map(|i| entry(1, i))).unwrap();
        drop(log);
        let log = LogFile::open(dir.path(), purged, None, OpenMode::Repair).unwrap();
        assert_eq!(indexes(&log), [41, 42]);
        // ...but a live record that does not follow the purge point is corruption.
        let early = Some(LogId::new(CommittedLeaderId::new(1, 1), 10));
        let err =
            LogFile::open(dir.path(), early, None, OpenMode::ReadOnly).unwrap_err().to_string();
        assert!(err.contains("entry 41 follows entry 15"), "{err}");
    }

    #[test]
    fn a_hole_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogFile::open(dir.path(), None, None, OpenMode::Repair).unwrap();
        log.append([entry(1, 1)]).unwrap();
        let err = log.append([entry(1, 3)]).unwrap_err().to_string();
        assert!(err.ends_with("append of entry 3 after entry 1 would leave a hole"), "{err}");
    }

    fn log_id(index: u64) -> Option<LogId> {
        Some(LogId::new(CommittedLeaderId::new(1, 1), index))
    }

    /// A log of entries 1..=n; returns the file's bytes and each record's start offset.
    fn write_log(dir: &Path, n: u64) -> (Vec<u8>, Vec<usize>) {
        let mut log = LogFile::open(dir, None, None, OpenMode::Repair).unwrap();
        log.append((1..=n).map(|i| entry(1, i))).unwrap();
        let starts = log.entries.values().map(|(off, _)| *off as usize).collect();
        drop(log);
        (std::fs::read(dir.join("log.bin")).unwrap(), starts)
    }

    /// What opening `bytes` as log.bin (with `committed`) must do, in both modes.
    #[derive(Debug)]
    enum Expect {
        /// Opens with these entries; the tail from `cut` on is torn (reported read-only, cut in
        /// repair mode).
        Torn { entries: Vec<u64>, cut: usize },
        /// Refuses in both modes with an error containing this, and changes no byte.
        Refuse(String),
    }

    fn check(bytes: &[u8], committed: Option<u64>, expect: Expect) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.bin");
        std::fs::write(&path, bytes).unwrap();
        let committed = committed.and_then(log_id);
        let ctx = format!("{} bytes, committed {committed:?}, expected {expect:?}", bytes.len());
        match expect {
            Expect::Torn { entries, cut } => {
                let ro = LogFile::open(dir.path(), None, committed, OpenMode::ReadOnly)
                    .unwrap_or_else(|e| panic!("{ctx}: read-only open failed: {e}"));
                assert_eq!(indexes(&ro), entries, "{ctx}");
                assert_eq!(ro.torn_tail_bytes, (bytes.len() - cut) as u64, "{ctx}");
                assert_eq!(std::fs::read(&path).unwrap(), bytes, "{ctx}: read-only wrote");
                let rw = LogFile::open(dir.path(), None, committed, OpenMode::Repair)
                    .unwrap_or_else(|e| panic!("{ctx}: repair open failed: {e}"));
                assert_eq!(indexes(&rw), entries, "{ctx}");
                assert_eq!(std::fs::read(&path).unwrap(), &bytes[..cut], "{ctx}: not cut");
            }
            Expect::Refuse(what) => {
                for mode in [OpenMode::ReadOnly, OpenMode::Repair] {
                    let err = match LogFile::open(dir.path(), None, committed, mode) {
                        Ok(log) => panic!("{ctx}: {mode:?} opened with {:?}", indexes(&log)),
                        Err(e) => e.to_string(),
                    };
                    assert!(err.starts_with(&format!("{}: corrupt Raft state: ", path.display())));
                    assert!(err.contains(&what), "{ctx}: {err}");
                    assert!(err.ends_with(WAY_OUT), "{ctx}: {err}");
                    assert_eq!(std::fs::read(&path).unwrap(), bytes, "{ctx}: {mode:?} wrote");
                }
            }
        }
    }

    #[test]
    fn every_crash_point_inside_the_last_record_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (full, starts) = write_log(dir.path(), 3);
        let last = starts[2];
        for cut in last + 1..full.len() {
            for committed in [None, Some(1), Some(2)] {
                check(&full[..cut], committed, Expect::Torn { entries: vec![1, 2], cut: last });
            }
        }
    }

    /// After a power cut some filesystems keep the grown file size but not the data: the tail
    /// reads as zeros. Before the fix the node refused to start ("checksum ok but not an
    /// entry": eight zero bytes are a valid empty record).
    #[test]
    fn a_zero_filled_tail_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (full, starts) = write_log(dir.path(), 3);
        let sizes = (1..=17).chain([63, 64, 511, 512, 513, 4095, 4096]);
        for zeros in sizes {
            let mut bytes = full.clone();
            bytes.resize(full.len() + zeros, 0);
            check(&bytes, Some(3), Expect::Torn { entries: vec![1, 2, 3], cut: full.len() });
            // The last append only partly written before the zeros.
            let mut bytes = full[..starts[2] + 5].to_vec();
            bytes.resize(starts[2] + 5 + zeros, 0);
            check(&bytes, Some(2), Expect::Torn { entries: vec![1, 2], cut: starts[2] });
        }
    }

    /// A flipped bit anywhere in a record followed by intact records is damage in the middle:
    /// refused, naming the damaged record's offset. Before the fix a flipped high bit of a
    /// length field made the length run past the end of the file, which was taken for a torn
    /// tail: every later (acknowledged) entry was cut with a warning.
    #[test]
    fn a_flipped_bit_in_a_middle_record_refuses_with_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let (full, starts) = write_log(dir.path(), 4);
        for (record, start) in starts.iter().copied().enumerate().take(3) {
            let end = starts[record + 1];
            // Every bit of the length and the checksum; a few bits of the payload.
            let header = (start..start + HEADER).flat_map(|b| (0..8).map(move |bit| (b, bit)));
            let payload = [start + HEADER, (start + end) / 2, end - 1].map(|b| (b, 3));
            for (byte, bit) in header.chain(payload) {
                let mut bytes = full.clone();
                bytes[byte] ^= 1 << bit;
                for committed in [None, Some(1)] {
                    let what = format!("bad record at byte {start}: ");
                    check(&bytes, committed, Expect::Refuse(what));
                }
            }
        }
    }

    /// The last record damaged but whole cannot be told from an append torn by a crash: it is
    /// cut unless it is committed.
    #[test]
    fn a_damaged_last_record_is_torn_unless_committed() {
        let dir = tempfile::tempdir().unwrap();
        let (full, starts) = write_log(dir.path(), 3);
        for byte in
            [starts[2], starts[2] + 3, starts[2] + 5, starts[2] + HEADER + 1, full.len() - 1]
        {
            let mut bytes = full.clone();
            bytes[byte] ^= 0x80;
            check(&bytes, Some(2), Expect::Torn { entries: vec![1, 2], cut: starts[2] });
            let what = format!("bad record at byte {}: ", starts[2]);
            check(&bytes, Some(3), Expect::Refuse(what));
        }
    }

    /// A torn tail that would take a committed entry with it is corruption (an fsync that
    /// lied, or damage), never cut. Before the fix it was cut with a warning.
    #[test]
    fn a_torn_tail_that_would_cut_a_committed_entry_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let (full, starts) = write_log(dir.path(), 3);
        let refuse = Expect::Refuse(format!(
            "bad record at byte {}: its length 0 is not a record's (zeros?); cutting the {} \
             bytes from there would lose committed entries (committed up to entry 3, last intact entry 2)",
            starts[2],
            full.len() - starts[2]
        ));
        let mut zeroed = full.clone();
        zeroed[starts[2]..].fill(0);
        check(&zeroed, Some(3), refuse);
        for cut in [starts[2] + 1, starts[2] + HEADER, full.len() - 1] {
            check(&full[..cut], Some(3), Expect::Refuse("lose committed entries".into()));
            check(&full[..cut], Some(7), Expect::Refuse("lose committed entries".into()));
        }
        // Nothing intact at all: a committed entry 0 (openraft's first) is lost too.
        check(&full[..5], Some(0), Expect::Refuse("last intact entry none".into()));
        check(&full[..5], None, Expect::Torn { entries: vec![], cut: 0 });
    }
}
