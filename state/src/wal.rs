//! The write-ahead log that makes appends durable with one `fdatasync`.
//!
//! sled 0.34's flush costs several device writes (pwrite + sync_file_range of
//! each sealed buffer) before our `fdatasync`. Instead, every append is applied
//! to sled in memory and written as one record to this log, and only the log
//! is synced (shared by concurrent writers through group commit). sled is
//! flushed and synced at checkpoints, after which the log is emptied; on open,
//! the records of the log that sled does not have yet are applied again.
//!
//! Record: `len: u32 LE`, `crc32(payload): u32 LE`, `payload` (a versioned
//! envelope of [`WalEntry`]). A torn or damaged tail (a write that never
//! completed, so was never acknowledged) ends the log and is cut off.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

/// One append, with every value already encoded as it goes into sled.
#[derive(Serialize, Deserialize)]
pub(crate) struct WalEntry {
    pub run: [u8; 16],
    /// The run's next sequence number after this append.
    pub head: u64,
    pub terminal: bool,
    pub snapshot: Vec<u8>,
    pub summary: Vec<u8>,
    pub events: Vec<(Vec<u8>, Vec<u8>)>,
}

/// An append encoded for the log and for sled.
pub(crate) struct Prepared {
    pub entry: WalEntry,
    pub payload: Vec<u8>,
    pub first_seq: u64,
}

impl Prepared {
    /// Encodes an append; `None` when the events are empty or do not run
    /// contiguously up to the snapshot's next sequence number.
    pub(crate) fn new(run: &crate::RunRecord, events: &[crate::EventRecord]) -> Option<Self> {
        let first = events.first()?;
        let contiguous = events.windows(2).all(|w| w[1].seq == w[0].seq + 1);
        let last_seq = events.last().map_or(first.seq, |e| e.seq);
        if !contiguous || last_seq + 1 != run.next_seq {
            return None;
        }
        let entry = WalEntry {
            run: *run.id.as_bytes(),
            head: run.next_seq,
            terminal: run.status.is_terminal(),
            snapshot: crate::encode(run),
            summary: crate::encode(&run.summary()),
            events: events.iter().map(|e| (crate::sled_store::event_key(run.id, e.seq).to_vec(), crate::encode(e))).collect(),
        };
        let payload = crate::encode(&entry);
        Some(Prepared { entry, payload, first_seq: first.seq })
    }
}

pub(crate) struct Wal {
    path: PathBuf,
    /// The log file and its size.
    file: Mutex<(File, u64)>,
    /// A second handle for fdatasync, so syncing never waits for the write lock.
    sync_handle: File,
}

impl Wal {
    /// Opens the log, returning it and the intact entries it holds.
    pub(crate) fn open(path: &Path) -> std::io::Result<(Wal, Vec<Vec<u8>>)> {
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut entries = Vec::new();
        let mut at = 0usize;
        while let Some(header) = bytes.get(at..at + 8) {
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            let Some(payload) = bytes.get(at + 8..at + 8 + len) else { break };
            if crc32fast::hash(payload) != crc {
                break;
            }
            entries.push(payload.to_vec());
            at += 8 + len;
        }
        if at != bytes.len() {
            tracing::warn!(path = %path.display(), kept = at, dropped = bytes.len() - at, "cutting off a torn write-ahead log tail");
            file.set_len(at as u64)?;
            file.sync_all()?;
        }
        let sync_handle = File::open(path)?;
        Ok((Wal { path: path.to_path_buf(), file: Mutex::new((file, at as u64)), sync_handle }, entries))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record (not yet durable: see [`Wal::sync`]). Returns the log size.
    pub(crate) fn write(&self, payload: &[u8]) -> std::io::Result<u64> {
        let len = u32::try_from(payload.len()).map_err(|_| std::io::Error::other("write-ahead record over 4 GiB"))?;
        let mut record = Vec::with_capacity(payload.len() + 8);
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        record.extend_from_slice(payload);
        let mut guard = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let (file, size) = &mut *guard;
        file.write_all(&record)?;
        *size += record.len() as u64;
        Ok(*size)
    }

    /// `fdatasync` of the log: every record written before is durable after.
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        self.sync_handle.sync_data()
    }

    /// Empties the log (after a checkpoint made its records durable elsewhere).
    pub(crate) fn truncate(&self) -> std::io::Result<()> {
        let mut guard = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let (file, size) = &mut *guard;
        file.set_len(0)?;
        *size = 0;
        file.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_torn_tail_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        {
            let (wal, entries) = Wal::open(&path).unwrap();
            assert!(entries.is_empty());
            wal.write(b"first").unwrap();
            wal.write(b"second").unwrap();
            wal.sync().unwrap();
        }
        // A write that was cut short by a crash.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let (wal, entries) = Wal::open(&path).unwrap();
        assert_eq!(entries, vec![b"first".to_vec(), b"second".to_vec()]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 8 + 5 + 8 + 6);
        // A flipped bit ends the log at the damaged record.
        drop(wal);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (wal, entries) = Wal::open(&path).unwrap();
        assert_eq!(entries, vec![b"first".to_vec()]);
        wal.truncate().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }
}
