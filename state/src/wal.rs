//! The write-ahead log that makes appends durable with one `fdatasync`.
//!
//! Every append is written as one record to this log and the log is synced;
//! only then is it applied to sled (in memory), so readers of sled see only
//! what is durable. sled is flushed and synced at checkpoints, after which the
//! log is emptied; on open, the records of the log are applied again.
//!
//! File: an 8-byte header (`DRWAL`, three bytes of which the first is the log
//! format, [`WAL_FORMAT`]), then records. Record: `magic: u32 LE`
//! ([`RECORD_MAGIC`]), `seq: u64 LE` (0 for the first record after the
//! header, +1 each), `len: u32 LE` (> 0), `crc32(magic ‖ seq ‖ len ‖
//! payload): u32 LE`, `payload` (a versioned envelope of [`WalEntry`]).
//!
//! Owns: the record format and the scan that tells a **torn tail** (the last
//! record incomplete or bad, nothing valid after it: a write that never
//! completed, so was never acknowledged; cut at open) from **damage followed
//! by valid records** (refused: [`Scan::damage`] says where and what follows).
//! Refuses: deciding what to do about damage (the store refuses to open,
//! `dr store repair --accept-loss` cuts) and any write after an I/O error
//! (the store poisons itself, see `sled_store.rs`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fault::{self, Site};

/// The log's own format (the file header), apart from the record envelope.
/// Format 1 had no header: a non-empty log without one is refused.
pub const WAL_FORMAT: u8 = 2;
const FILE_MAGIC: &[u8; 5] = b"DRWAL";
pub(crate) const HEADER_LEN: u64 = 8;
/// The first field of every record.
pub const RECORD_MAGIC: u32 = 0xD7A1_0C5E;
const RECORD_HEADER: usize = 20;
/// A record larger than this is damage, not data.
const MAX_RECORD: u32 = 1 << 30;

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

impl WalEntry {
    /// The sequence numbers of the events this entry carries.
    pub(crate) fn event_seqs(&self) -> Vec<u64> {
        self.events
            .iter()
            .filter_map(|(k, _)| k.get(16..24).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes))
            .collect()
    }
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

/// One record found by a scan: where it starts and what it holds.
#[derive(Clone, Debug)]
pub struct Record {
    pub offset: u64,
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// Damage followed by valid records: the log cannot be cut without losing
/// acknowledged appends.
#[derive(Clone, Debug)]
pub struct Damage {
    /// Where the first bad record starts.
    pub offset: u64,
    /// The valid records found after it (as far as they could be found).
    pub after: Vec<Record>,
}

/// What a log holds, read without changing it.
#[derive(Clone, Debug)]
pub struct Scan {
    pub size: u64,
    /// The intact records before any damage, in order.
    pub records: Vec<Record>,
    /// Where the intact records end.
    pub end: u64,
    /// Bytes after `end` with nothing valid after them (cut at open).
    pub torn: Option<u64>,
    pub damage: Option<Damage>,
}

/// Why a log could not be scanned at all.
#[derive(Debug)]
pub(crate) enum ScanError {
    Io(std::io::Error),
    /// A non-empty log without our header: another format.
    Format { found: String },
}

impl From<std::io::Error> for ScanError {
    fn from(e: std::io::Error) -> Self {
        ScanError::Io(e)
    }
}

fn crc(magic: u32, seq: u64, len: u32, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&magic.to_le_bytes());
    h.update(&seq.to_le_bytes());
    h.update(&len.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    bytes.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes)
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    bytes.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)
}

/// The record at `at` if it is whole and its CRC holds; its length on disk.
fn record_at(bytes: &[u8], at: usize) -> Option<(Record, usize)> {
    if u32_at(bytes, at)? != RECORD_MAGIC {
        return None;
    }
    let seq = u64_at(bytes, at + 4)?;
    let len = u32_at(bytes, at + 12)?;
    let stored = u32_at(bytes, at + 16)?;
    if len == 0 || len > MAX_RECORD {
        return None;
    }
    let payload = bytes.get(at + RECORD_HEADER..at + RECORD_HEADER + len as usize)?;
    if crc(RECORD_MAGIC, seq, len, payload) != stored {
        return None;
    }
    Some((Record { offset: at as u64, seq, payload: payload.to_vec() }, RECORD_HEADER + len as usize))
}

/// Encodes one record.
fn frame(seq: u64, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let len = u32::try_from(payload.len()).ok().filter(|l| *l > 0 && *l <= MAX_RECORD);
    let len = len.ok_or_else(|| std::io::Error::other(format!("write-ahead record of {} bytes (1 B to 1 GiB)", payload.len())))?;
    let mut record = Vec::with_capacity(payload.len() + RECORD_HEADER);
    record.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    record.extend_from_slice(&seq.to_le_bytes());
    record.extend_from_slice(&len.to_le_bytes());
    record.extend_from_slice(&crc(RECORD_MAGIC, seq, len, payload).to_le_bytes());
    record.extend_from_slice(payload);
    Ok(record)
}

fn file_header() -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..5].copy_from_slice(FILE_MAGIC);
    h[5] = WAL_FORMAT;
    h
}

/// Reads the log at `path` and classifies what it holds. Changes nothing.
/// A missing or empty file is an empty log.
pub(crate) fn scan(path: &Path) -> Result<Scan, ScanError> {
    let bytes = match File::open(path) {
        Ok(mut f) => {
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes)?;
            bytes
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    scan_bytes(&bytes)
}

fn scan_bytes(bytes: &[u8]) -> Result<Scan, ScanError> {
    let size = bytes.len() as u64;
    let mut out = Scan { size, records: Vec::new(), end: 0, torn: None, damage: None };
    if bytes.is_empty() {
        return Ok(out);
    }
    let header = file_header();
    match bytes.get(..HEADER_LEN as usize) {
        Some(h) if h == header => {}
        Some(h) if h[..5] == *FILE_MAGIC => return Err(ScanError::Format { found: format!("{}", h[5]) }),
        // A header cut short by a crash while the log was created: nothing was ever in it.
        None if header.starts_with(bytes) => {
            out.torn = Some(size);
            return Ok(out);
        }
        _ => return Err(ScanError::Format { found: "1 (no header)".to_owned() }),
    }
    let mut at = HEADER_LEN as usize;
    while at < bytes.len() {
        match record_at(bytes, at) {
            Some((record, len)) if record.seq == out.records.len() as u64 => {
                out.records.push(record);
                at += len;
            }
            _ => break,
        }
    }
    out.end = at as u64;
    if at == bytes.len() {
        return Ok(out);
    }
    // Something bad at `at`: a torn tail unless a valid later record follows.
    let next_seq = out.records.len() as u64;
    let mut after = Vec::new();
    let mut probe = at + 1;
    while probe + RECORD_HEADER <= bytes.len() {
        match record_at(bytes, probe) {
            Some((record, len)) if record.seq >= next_seq => {
                after.push(record);
                probe += len;
            }
            _ => probe += 1,
        }
    }
    if after.is_empty() {
        out.torn = Some(size - at as u64);
    } else {
        out.damage = Some(Damage { offset: at as u64, after });
    }
    Ok(out)
}

/// Opens (creating if needed, mode 0600) a file of the state directory.
pub(crate) fn open_private(path: &Path, append: bool) -> std::io::Result<File> {
    let file = OpenOptions::new().read(true).write(!append).append(append).create(true).truncate(false).mode(0o600).open(path)?;
    // An older dr created it with the umask's mode: make it private.
    if file.metadata()?.permissions().mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

pub(crate) struct Wal {
    path: PathBuf,
    file: File,
    /// The size of the log (where the next record goes).
    size: u64,
    /// The sequence number of the next record.
    next_seq: u64,
}

impl Wal {
    /// Opens a log that [`scan`] found without damage: cuts its torn tail (if
    /// any) and writes the header of a new log. The caller decides before this
    /// that opening is right; nothing is changed when `scan` found damage.
    pub(crate) fn open(path: &Path, scanned: &Scan) -> std::io::Result<Wal> {
        if scanned.damage.is_some() {
            return Err(std::io::Error::other("refusing to open a damaged write-ahead log"));
        }
        let file = open_private(path, true)?;
        let mut wal = Wal { path: path.to_path_buf(), file, size: scanned.end, next_seq: scanned.records.len() as u64 };
        if let Some(dropped) = scanned.torn {
            tracing::warn!(path = %path.display(), kept = scanned.end, dropped, "cutting off a torn write-ahead log tail");
        }
        if scanned.end < HEADER_LEN {
            wal.file.set_len(0)?;
            (&wal.file).write_all(&file_header())?;
            wal.size = HEADER_LEN;
            wal.sync_all()?;
        } else if scanned.torn.is_some() {
            wal.file.set_len(scanned.end)?;
            wal.sync_all()?;
        }
        Ok(wal)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Appends records for `payloads` (not yet durable: see [`Wal::sync`]).
    /// A failed write is rolled back (the file cut to where it was, synced) so
    /// that nothing is ever appended after junk; the error is returned either
    /// way, and the caller stops writing.
    pub(crate) fn write(&mut self, payloads: &[&[u8]]) -> std::io::Result<()> {
        let mut buffer = Vec::new();
        for (i, payload) in payloads.iter().enumerate() {
            buffer.extend_from_slice(&frame(self.next_seq + i as u64, payload)?);
        }
        let written = match fault::inject(Site::LogWrite) {
            Ok(()) => (&self.file).write_all(&buffer),
            // An injected fault writes half of the record first, as a full disk would.
            Err(e) => (&self.file).write_all(&buffer[..buffer.len() / 2]).and(Err(e)),
        };
        if let Err(e) = written {
            let rolled_back = self.file.set_len(self.size).and_then(|()| self.sync_all());
            return Err(match rolled_back {
                Ok(()) => e,
                Err(r) => std::io::Error::new(e.kind(), format!("{e}; rolling the partial record back failed too: {r}")),
            });
        }
        self.size += buffer.len() as u64;
        self.next_seq += payloads.len() as u64;
        Ok(())
    }

    /// `fdatasync` of the log: every record written before is durable after.
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        fault::inject(Site::LogSync)?;
        self.file.sync_data()
    }

    fn sync_all(&self) -> std::io::Result<()> {
        fault::inject(Site::CheckpointSync)?;
        self.file.sync_all()
    }

    /// Empties the log (after a checkpoint made its records durable elsewhere).
    pub(crate) fn truncate(&mut self) -> std::io::Result<()> {
        self.file.set_len(HEADER_LEN)?;
        self.size = HEADER_LEN;
        self.next_seq = 0;
        self.sync_all()
    }
}

/// Cuts the log at `offset` (the start of its damage) and syncs it: what
/// `dr store repair --accept-loss` does. Nothing else is changed.
pub(crate) fn cut(path: &Path, offset: u64) -> std::io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(offset)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(dir: &Path, payloads: &[&[u8]]) -> PathBuf {
        let path = dir.join("wal");
        let mut wal = Wal::open(&path, &scan(&path).unwrap()).unwrap();
        wal.write(payloads).unwrap();
        wal.sync().unwrap();
        path
    }

    fn offsets(path: &Path) -> Vec<u64> {
        scan(path).unwrap().records.iter().map(|r| r.offset).collect()
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = log(dir.path(), &[b"first", b"second"]);
        // A write that was cut short by a crash.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&frame(2, b"third").unwrap()[..9]).unwrap();
        drop(f);
        let scanned = scan(&path).unwrap();
        let payloads: Vec<&[u8]> = scanned.records.iter().map(|r| r.payload.as_slice()).collect();
        assert_eq!(payloads, vec![&b"first"[..], b"second"]);
        assert_eq!(scanned.torn, Some(9));
        assert!(scanned.damage.is_none());
        let mut wal = Wal::open(&path, &scanned).unwrap();
        let whole = HEADER_LEN + 2 * RECORD_HEADER as u64 + 11;
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole);
        // Writing goes on after the cut, with the next sequence number.
        wal.write(&[b"third"]).unwrap();
        assert_eq!(scan(&path).unwrap().records[2].seq, 2);
        wal.truncate().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), HEADER_LEN);
        assert!(scan(&path).unwrap().records.is_empty());
    }

    #[test]
    fn a_bad_last_record_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = log(dir.path(), &[b"first", b"second"]);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let scanned = scan_bytes(&bytes).unwrap();
        assert_eq!(scanned.records.len(), 1);
        assert!(scanned.damage.is_none());
        assert_eq!(scanned.torn, Some(RECORD_HEADER as u64 + 6));
    }

    #[test]
    fn damage_followed_by_valid_records_is_told_apart_from_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = log(dir.path(), &[b"r0", b"r1", b"r2", b"r3", b"r4"]);
        let at = offsets(&path);
        let clean = std::fs::read(&path).unwrap();
        let check = |bytes: &[u8], offset: u64, after: usize| {
            let scanned = scan_bytes(bytes).unwrap();
            let damage = scanned.damage.unwrap_or_else(|| panic!("no damage found: {:?}", scanned.torn));
            assert_eq!(damage.offset, offset);
            assert_eq!(damage.after.len(), after, "{damage:?}");
            assert!(damage.after[0].seq >= scanned.records.len() as u64);
        };
        // One flipped byte in the payload of record 2, in its CRC, in its length, in its seq.
        for within in [RECORD_HEADER, 16, 12, 4, 0] {
            let mut bytes = clean.clone();
            bytes[at[2] as usize + within] ^= 0x40;
            check(&bytes, at[2], 2);
        }
        // Eight zero bytes inserted before record 2, or inside it.
        for (inside, after) in [(0, 3), (7, 2)] {
            let mut bytes = clean.clone();
            let pos = at[2] as usize + inside;
            bytes.splice(pos..pos, [0u8; 8]);
            check(&bytes, at[2], after);
        }
        // A zero-length record is invalid even with a correct CRC.
        let mut bytes = clean[..at[2] as usize].to_vec();
        let mut empty = Vec::new();
        empty.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
        empty.extend_from_slice(&2u64.to_le_bytes());
        empty.extend_from_slice(&0u32.to_le_bytes());
        empty.extend_from_slice(&crc(RECORD_MAGIC, 2, 0, &[]).to_le_bytes());
        bytes.extend_from_slice(&empty);
        bytes.extend_from_slice(&clean[at[2] as usize..]);
        check(&bytes, at[2], 3);
    }

    #[test]
    fn a_log_of_another_format_is_refused() {
        assert!(matches!(scan_bytes(&[7, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9]), Err(ScanError::Format { .. })));
        let mut future = file_header().to_vec();
        future[5] = 9;
        assert!(matches!(scan_bytes(&future), Err(ScanError::Format { found }) if found == "9"));
        // A header cut short while the log was created holds nothing.
        assert_eq!(scan_bytes(&file_header()[..3]).unwrap().torn, Some(3));
    }

    #[test]
    fn a_failed_write_is_rolled_back_and_the_log_stays_clean() {
        let dir = tempfile::tempdir().unwrap();
        let path = log(dir.path(), &[b"first"]);
        let mut wal = Wal::open(&path, &scan(&path).unwrap()).unwrap();
        let before = std::fs::read(&path).unwrap();
        fault::arm(Site::LogWrite, 1);
        assert!(wal.write(&[b"second"]).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), before, "nothing of the failed record remains");
    }
}
