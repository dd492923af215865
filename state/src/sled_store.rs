//! [`SledStore`]: the store on disk.
//!
//! Layout of a state directory: `LOCK` (held with `flock` by the one process
//! that owns the store; holds its pid), `sled/` (the sled database). Trees:
//! `runs` (run id → snapshot), `summaries` (run id → summary), `events`
//! (run id ‖ seq as big-endian u64 → event), `open` (run id → (), unfinished
//! runs), `heads` (run id → next seq), `stats` (workflow \0 step → recent
//! durations), `meta` (`format` → format version). `wal` is the write-ahead
//! log (see [`crate::wal`]): appends are durable once it is synced; sled itself
//! is flushed and synced at checkpoints.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, RwLock};


use crate::envelope::{decode, encode, FORMAT_VERSION};
use crate::model::{EventRecord, RunId, RunRecord, RunSummary};
use crate::sync::{fdatasync, GroupSync};
use crate::wal::{Wal, WalEntry};
use crate::{Append, Error, Result, Store, STATS_WINDOW};

/// The sled-backed store. One process at a time may open a state directory.
pub struct SledStore {
    dir: PathBuf,
    db: sled::Db,
    runs: sled::Tree,
    summaries: sled::Tree,
    events: sled::Tree,
    open: sled::Tree,
    heads: sled::Tree,
    stats: sled::Tree,
    log_file: File,
    wal: Wal,
    /// Appends hold it shared; a checkpoint holds it exclusively.
    checkpoint: RwLock<()>,
    /// One append writes into sled at a time (the head check and the writes
    /// that follow it are one step).
    writer: Mutex<()>,
    group: GroupSync,
    _lock: File,
}

/// The write-ahead log is checkpointed into sled when it grows past this.
const WAL_CHECKPOINT_BYTES: u64 = 32 << 20;

/// Counters of the store's durability work.
#[derive(Clone, Copy, Debug, Default)]
pub struct SyncStats {
    /// Physical syncs (sled flush + fdatasync) performed.
    pub syncs: u64,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl SledStore {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|source| Error::CreateDir { path: dir.clone(), source })?;
        let lock = acquire_lock(&dir)?;
        let sled_dir = dir.join("sled");
        let db = sled::Config::new()
            .path(&sled_dir)
            .segment_size(1 << 20)
            .cache_capacity(32 << 20)
            // Durability comes from the write-ahead log; sled is flushed at checkpoints.
            .flush_every_ms(None)
            .open()
            .map_err(|source| classify_sled_error(&dir, source))?;
        let tree = |name: &str| db.open_tree(name).map_err(|source| Error::Sled { path: dir.clone(), source });
        let meta = tree("meta")?;
        match meta.get("format").map_err(|source| Error::Sled { path: dir.clone(), source })? {
            Some(v) if v.as_ref() == [FORMAT_VERSION] => {}
            Some(v) => {
                return Err(Error::UnsupportedFormat {
                    path: dir.clone(),
                    found: v.first().copied().unwrap_or(0),
                    supported: FORMAT_VERSION,
                })
            }
            None => {
                meta.insert("format", &[FORMAT_VERSION]).map_err(|source| Error::Sled { path: dir.clone(), source })?;
            }
        }
        let log_path = sled_dir.join("db");
        let log_file = File::open(&log_path).map_err(|source| Error::Io { path: log_path.clone(), source })?;
        let wal_path = dir.join("wal");
        let (wal, pending) = Wal::open(&wal_path).map_err(|source| Error::Io { path: wal_path.clone(), source })?;
        let store = SledStore {
            runs: tree("runs")?,
            summaries: tree("summaries")?,
            events: tree("events")?,
            open: tree("open")?,
            heads: tree("heads")?,
            stats: tree("stats")?,
            db,
            log_file,
            wal,
            checkpoint: RwLock::new(()),
            writer: Mutex::new(()),
            group: GroupSync::new(),
            _lock: lock,
            dir,
        };
        let replayed = store.replay_wal(&pending)?;
        if replayed > 0 {
            tracing::info!(replayed, "applied write-ahead log records that sled had not persisted");
        }
        // Whatever the log held is now in sled: make that durable and empty the log.
        store.checkpoint_now()?;
        // The directory entries of a new store must be durable too.
        for d in [&store.dir, &sled_dir] {
            if let Ok(f) = File::open(d) {
                let _ = f.sync_all();
            }
        }
        Ok(store)
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Counters of physical syncs so far.
    pub fn sync_stats(&self) -> SyncStats {
        SyncStats { syncs: self.group.syncs() }
    }

    /// Writes raw bytes under a key: for tests that corrupt a record on purpose.
    #[cfg(any(test, feature = "test-util"))]
    pub fn corrupt_run_for_test(&self, id: RunId, bytes: &[u8]) -> Result<()> {
        self.runs.insert(id.as_bytes(), bytes).map_err(|source| self.sled_err(source))?;
        self.summaries.insert(id.as_bytes(), bytes).map_err(|source| self.sled_err(source))?;
        self.checkpoint_now()
    }

    /// Flushes and syncs sled, then empties the write-ahead log.
    fn checkpoint_now(&self) -> Result<()> {
        let _exclusive = self.checkpoint.write().unwrap_or_else(PoisonError::into_inner);
        let io = |source: std::io::Error| Error::Io { path: self.dir.join("sled"), source };
        self.db.flush().map_err(|s| self.sled_err(s))?;
        fdatasync(&self.log_file).map_err(io)?;
        self.wal.truncate().map_err(|source| Error::Io { path: self.wal.path().to_path_buf(), source })
    }

    /// Applies the log entries sled does not have (a run's head is behind the entry's).
    fn replay_wal(&self, entries: &[Vec<u8>]) -> Result<usize> {
        let mut applied = 0;
        for (index, payload) in entries.iter().enumerate() {
            let entry: WalEntry = decode(payload).map_err(|detail| Error::Corrupted {
                tree: "wal",
                key: format!("record {index}"),
                run: None,
                detail,
            })?;
            // Events never change once written: putting them again is harmless,
            // and repairs a history whatever order sled persisted its writes in.
            for (k, v) in &entry.events {
                self.events.insert(k.as_slice(), v.as_slice()).map_err(|s| self.sled_err(s))?;
            }
            let current = self.head(&entry.run)?;
            // An entry at sled's head is applied again too (same bytes), in case sled
            // kept the head but not the snapshot; an older one would go back in time.
            if current <= entry.head {
                self.apply(&entry).map_err(|source| self.sled_err(source))?;
                applied += 1;
            }
        }
        Ok(applied)
    }

    /// Writes an append into sled: events first, the run's head last, so that
    /// sled's log (persisted in order) never holds a head without what it
    /// covers. Atomicity across a crash comes from the write-ahead log, whose
    /// entry is written before this and applied again on open. Callers hold
    /// `self.writer` (or are alone, at open).
    fn apply(&self, entry: &WalEntry) -> Result<(), sled::Error> {
        let key = &entry.run[..];
        for (k, v) in &entry.events {
            self.events.insert(k.as_slice(), v.as_slice())?;
        }
        self.runs.insert(key, entry.snapshot.as_slice())?;
        self.summaries.insert(key, entry.summary.as_slice())?;
        if entry.terminal {
            self.open.remove(key)?;
        } else {
            self.open.insert(key, &[][..])?;
        }
        self.heads.insert(key, &entry.head.to_be_bytes()[..])?;
        Ok(())
    }

    fn sled_err(&self, source: sled::Error) -> Error {
        Error::Sled { path: self.dir.clone(), source }
    }
}

pub(crate) fn event_key(id: RunId, seq: u64) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(id.as_bytes());
    key[16..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn stats_key(workflow: &str, step: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(workflow.len() + step.len() + 1);
    key.extend_from_slice(workflow.as_bytes());
    key.push(0);
    key.extend_from_slice(step.as_bytes());
    key
}

fn acquire_lock(dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| Error::NotWritable { path: dir.to_path_buf(), source })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(Error::Busy { path: dir.to_path_buf(), pid: text.trim().parse().ok() });
        }
        Err(std::fs::TryLockError::Error(source)) => return Err(Error::Io { path, source }),
    }
    let pid = std::process::id();
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(format!("{pid}\n").as_bytes()));
    written.map_err(|source| Error::NotWritable { path: dir.to_path_buf(), source })?;
    Ok(file)
}

fn classify_sled_error(dir: &Path, source: sled::Error) -> Error {
    match &source {
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            Error::Busy { path: dir.to_path_buf(), pid: None }
        }
        sled::Error::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => Error::NotWritable {
            path: dir.to_path_buf(),
            source: std::io::Error::new(io.kind(), io.to_string()),
        },
        _ => Error::Sled { path: dir.to_path_buf(), source },
    }
}

impl SledStore {
    /// Applies one append to sled and writes it to the log, not yet synced.
    /// Returns the log's size.
    fn stage(&self, append: &Append) -> Result<u64> {
        let run = append.run();
        let run_label = run.id.to_string();
        let Some(prepared) = &append.prepared else {
            if append.events().is_empty() {
                return Ok(0);
            }
            let first = append.events().first().map_or(0, |e| e.seq);
            return Err(Error::SequenceConflict { run: run_label, expected: first, found: run.next_seq });
        };
        let (entry, first_seq) = (&prepared.entry, prepared.first_seq);
        let _one_writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.head(&entry.run)?;
        if current != first_seq {
            return Err(Error::SequenceConflict { run: run_label, expected: first_seq, found: current });
        }
        // The log first: whatever part of this append sled may keep after a
        // crash, the complete entry is in the log and is applied again on open.
        let size = self.wal.write(&prepared.payload).map_err(|source| Error::Io { path: self.wal.path().to_path_buf(), source })?;
        self.apply(entry).map_err(|source| self.sled_err(source))?;
        Ok(size)
    }

    /// The run's next sequence number as sled has it (0 for an unknown run).
    fn head(&self, run: &[u8; 16]) -> Result<u64> {
        let head = self.heads.get(run).map_err(|s| self.sled_err(s))?;
        Ok(head.map_or(0, |v| u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0xff; 8]))))
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        if let Err(e) = self.checkpoint_now() {
            tracing::warn!(error = %e, "checkpoint at close failed; the write-ahead log keeps the data");
        }
    }
}

impl Store for SledStore {
    fn append(&self, run: &RunRecord, events: &[EventRecord]) -> Result<()> {
        self.append_batch(vec![Append::new(run.clone(), events.to_vec())]).pop().unwrap_or(Ok(()))
    }

    fn append_batch(&self, items: Vec<Append>) -> Vec<Result<()>> {
        let mut results: Vec<Result<()>> = Vec::with_capacity(items.len());
        let mut wal_size = 0;
        {
            let _shared = self.checkpoint.read().unwrap_or_else(PoisonError::into_inner);
            for append in &items {
                let staged = self.stage(append);
                if let Ok(size) = &staged {
                    wal_size = wal_size.max(*size);
                }
                results.push(staged.map(|_| ()));
            }
        }
        if results.iter().any(Result::is_ok) {
            if let Err(detail) = self.group.sync(|| self.wal.sync()) {
                for r in results.iter_mut().filter(|r| r.is_ok()) {
                    *r = Err(Error::Io { path: self.wal.path().to_path_buf(), source: std::io::Error::other(detail.clone()) });
                }
            }
        }
        if wal_size > WAL_CHECKPOINT_BYTES {
            if let Err(e) = self.checkpoint_now() {
                tracing::warn!(error = %e, "checkpoint failed; the write-ahead log keeps growing until one succeeds");
            }
        }
        results
    }

    fn load(&self, id: RunId) -> Result<Option<RunRecord>> {
        let Some(bytes) = self.runs.get(id.as_bytes()).map_err(|s| self.sled_err(s))? else { return Ok(None) };
        decode(&bytes).map(Some).map_err(|detail| Error::Corrupted {
            tree: "runs",
            key: id.to_string(),
            run: Some(id.to_string()),
            detail,
        })
    }

    fn events(&self, id: RunId) -> Result<Vec<EventRecord>> {
        // Events at or past the head belong to an append that never completed.
        let head = self.head(id.as_bytes())?;
        let mut out = Vec::new();
        for item in self.events.scan_prefix(id.as_bytes()) {
            let (key, value) = item.map_err(|s| self.sled_err(s))?;
            let seq = key.get(16..24).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(u64::MAX);
            if seq >= head {
                break;
            }
            let event: EventRecord = decode(&value).map_err(|detail| Error::Corrupted {
                tree: "events",
                key: format!("{id}/{seq}"),
                run: Some(id.to_string()),
                detail,
            })?;
            out.push(event);
        }
        Ok(out)
    }

    fn summaries(&self) -> Result<Vec<Result<RunSummary>>> {
        let mut out = Vec::with_capacity(self.summaries.len());
        for item in self.summaries.iter() {
            let (key, value) = item.map_err(|s| self.sled_err(s))?;
            let label = RunId::from_key(&key).map(|id| id.to_string()).unwrap_or_else(|| format!("{key:?}"));
            out.push(decode::<RunSummary>(&value).map_err(|detail| Error::Corrupted {
                tree: "summaries",
                key: label.clone(),
                run: Some(label),
                detail,
            }));
        }
        Ok(out)
    }

    fn open_runs(&self) -> Result<Vec<RunId>> {
        self.open
            .iter()
            .keys()
            .map(|k| k.map_err(|s| self.sled_err(s)).map(|k| RunId::from_key(&k)))
            .filter_map(Result::transpose)
            .collect()
    }

    fn run_ids(&self) -> Result<Vec<RunId>> {
        self.heads
            .iter()
            .keys()
            .map(|k| k.map_err(|s| self.sled_err(s)).map(|k| RunId::from_key(&k)))
            .filter_map(Result::transpose)
            .collect()
    }

    fn record_duration(&self, workflow: &str, step: &str, millis: u64) -> Result<()> {
        self.stats
            .update_and_fetch(stats_key(workflow, step), |old| {
                let mut window: Vec<u64> = old.and_then(|b| decode(b).ok()).unwrap_or_default();
                window.push(millis);
                if window.len() > STATS_WINDOW {
                    let excess = window.len() - STATS_WINDOW;
                    window.drain(..excess);
                }
                Some(encode(&window))
            })
            .map_err(|s| self.sled_err(s))?;
        Ok(())
    }

    fn durations(&self, workflow: &str, step: &str) -> Result<Vec<u64>> {
        let Some(bytes) = self.stats.get(stats_key(workflow, step)).map_err(|s| self.sled_err(s))? else {
            return Ok(Vec::new());
        };
        // Statistics are advisory: a damaged window is treated as empty.
        Ok(decode(&bytes).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests;
