//! [`SledStore`]: the store on disk.
//!
//! Layout of a state directory (mode 0700, every file 0600): `LOCK` (held
//! with `flock` by the one process that owns the store; holds its pid),
//! `wal` (the write-ahead log, see [`crate::wal`]), `sled/` (the sled
//! database). Trees: `runs` (run id → snapshot), `summaries` (run id →
//! summary), `events` (run id ‖ seq as big-endian u64 → event), `open` (run id
//! → (), unfinished runs), `heads` (run id → next seq), `stats` (workflow \0
//! step → recent durations), `meta` (`format` → format version).
//!
//! Durability: an append is written to the log and the log `fdatasync`ed
//! before it is applied to sled (in memory) and acknowledged; sled is flushed
//! and every file and directory under the state directory fsynced at
//! checkpoints (open, close, log over 32 MiB), and only then is the log
//! emptied. Any write, sync or flush error **poisons** the store for the life
//! of the process: nothing more is appended, checkpointed or truncated, and
//! the next process replays the log.
//!
//! sled creates its own files (segments, `blobs/*`) with the process umask;
//! they are chmodded 0600 at open and at every checkpoint. In between, a new
//! sled file may carry the umask's mode, but it sits in the 0700 directory
//! that no one else can enter.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::envelope::{decode, encode, FORMAT_VERSION};
use crate::fault::{self, Site};
use crate::model::{EventRecord, RunId, RunRecord, RunSummary};
use crate::wal::{self, Scan, ScanError, Wal, WalEntry};
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
    /// The log and whether the store is poisoned: every write holds it, so
    /// appends and checkpoints never overlap.
    commit: Mutex<Commit>,
    syncs: AtomicU64,
    /// The state directory is readable by others (the warning to show).
    permission_warning: Option<String>,
    /// Open completed: only then may dropping the store checkpoint.
    ready: bool,
    _lock: File,
}

struct Commit {
    wal: Wal,
    /// The first write, sync or flush error of this process.
    poisoned: Option<String>,
}

/// The write-ahead log is checkpointed into sled when it grows past this.
const WAL_CHECKPOINT_BYTES: u64 = 32 << 20;

/// Counters of the store's durability work.
#[derive(Clone, Copy, Debug, Default)]
pub struct SyncStats {
    /// Physical syncs of the write-ahead log performed.
    pub syncs: u64,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// Creates the state directory (0700) or checks an existing one: refused when
/// others may write to it, a warning (returned) when others may read it.
pub(crate) fn prepare_dir(dir: &Path, for_writing: bool) -> Result<Option<String>> {
    match std::fs::metadata(dir) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o7777;
            if for_writing && mode & 0o022 != 0 {
                return Err(Error::InsecureDir { path: dir.to_path_buf(), mode });
            }
            let who = if mode & 0o022 != 0 { "others can write to it (dr refuses to run there)" } else { "others can read every run's history" };
            Ok((mode & 0o077 != 0).then(|| format!("state directory {} has mode {mode:04o}: {who}; `chmod 700 {}`", dir.display(), dir.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && for_writing => {
            let create = |source| Error::CreateDir { path: dir.to_path_buf(), source };
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(create)?;
            // The umask may have taken bits away (never added): set the mode as it must be.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(create)?;
            Ok(None)
        }
        Err(source) => Err(Error::CreateDir { path: dir.to_path_buf(), source }),
    }
}

/// Scans the log of `dir` without changing it, turning what refuses an open into errors.
pub(crate) fn scan_wal(dir: &Path) -> Result<Scan> {
    let path = dir.join("wal");
    match wal::scan(&path) {
        Ok(scan) => Ok(scan),
        Err(ScanError::Io(source)) => Err(Error::Io { path, source }),
        Err(ScanError::Format { found }) => Err(Error::WalFormat { path, found, supported: wal::WAL_FORMAT }),
    }
}

impl SledStore {
    /// Opens (creating if needed) the store in `dir`. A store that cannot be
    /// opened is left exactly as it was (only `LOCK` holds a new pid).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let permission_warning = prepare_dir(&dir, true)?;
        let lock = acquire_lock(&dir)?;
        // Decide about the log before anything is written anywhere.
        let scanned = scan_wal(&dir)?;
        if let Some(damage) = &scanned.damage {
            return Err(crate::repair::damage_error(&dir.join("wal"), damage));
        }
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
        let wal_path = dir.join("wal");
        let wal = Wal::open(&wal_path, &scanned).map_err(|source| Error::Io { path: wal_path.clone(), source })?;
        let mut store = SledStore {
            runs: tree("runs")?,
            summaries: tree("summaries")?,
            events: tree("events")?,
            open: tree("open")?,
            heads: tree("heads")?,
            stats: tree("stats")?,
            db,
            commit: Mutex::new(Commit { wal, poisoned: None }),
            syncs: AtomicU64::new(0),
            permission_warning,
            ready: false,
            _lock: lock,
            dir,
        };
        let payloads: Vec<&[u8]> = scanned.records.iter().map(|r| r.payload.as_slice()).collect();
        let replayed = store.replay_wal(&payloads)?;
        if replayed > 0 {
            tracing::info!(replayed, "applied write-ahead log records that sled had not persisted");
        }
        // Whatever the log held is now in sled: make that durable and empty the log.
        let mut commit = store.lock_commit();
        store.checkpoint(&mut commit)?;
        drop(commit);
        store.ready = true;
        Ok(store)
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Counters of physical syncs so far.
    pub fn sync_stats(&self) -> SyncStats {
        SyncStats { syncs: self.syncs.load(Ordering::Relaxed) }
    }

    /// Set when the state directory is readable by others: what to tell the operator.
    pub fn permission_warning(&self) -> Option<&str> {
        self.permission_warning.as_deref()
    }

    /// The I/O error that stopped this store from writing, if one did.
    pub fn poisoned(&self) -> Option<String> {
        self.lock_commit().poisoned.clone()
    }

    /// Writes raw bytes under a key: for tests that corrupt a record on purpose.
    #[cfg(any(test, feature = "test-util"))]
    pub fn corrupt_run_for_test(&self, id: RunId, bytes: &[u8]) -> Result<()> {
        self.runs.insert(id.as_bytes(), bytes).map_err(|source| self.sled_err(source))?;
        self.summaries.insert(id.as_bytes(), bytes).map_err(|source| self.sled_err(source))?;
        self.checkpoint_now()
    }

    /// A checkpoint now, as at close.
    #[cfg(any(test, feature = "test-util"))]
    pub(crate) fn checkpoint_now(&self) -> Result<()> {
        let mut commit = self.lock_commit();
        self.checkpoint(&mut commit)
    }

    fn lock_commit(&self) -> MutexGuard<'_, Commit> {
        self.commit.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn poisoned_error(&self, cause: &str) -> Error {
        Error::Poisoned { path: self.dir.clone(), cause: cause.to_owned() }
    }

    /// Makes everything sled wrote durable (flush, then fsync of every file
    /// and directory under the state directory), then empties the log. A
    /// failure poisons the store: the log is never emptied on the strength of
    /// a failed or retried sync.
    fn checkpoint(&self, commit: &mut Commit) -> Result<()> {
        if let Some(cause) = &commit.poisoned {
            return Err(self.poisoned_error(cause));
        }
        let flushed = self.db.flush().map_err(|e| format!("flushing sled: {e}"));
        let synced = flushed.and_then(|_| {
            sync_tree(&self.dir.join("sled")).and_then(|()| sync_dir(&self.dir)).map_err(|e| format!("syncing sled's files: {e}"))
        });
        let truncated = synced.and_then(|()| commit.wal.truncate().map_err(|e| format!("emptying {}: {e}", commit.wal.path().display())));
        if let Err(cause) = truncated {
            tracing::error!(dir = %self.dir.display(), %cause, "checkpoint failed; the store writes nothing more in this process");
            commit.poisoned = Some(cause.clone());
            return Err(self.poisoned_error(&cause));
        }
        Ok(())
    }

    /// Applies the log entries sled does not have (a run's head is behind the entry's).
    fn replay_wal(&self, entries: &[&[u8]]) -> Result<usize> {
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
    /// sled's own log (persisted in order) never holds a head without what it
    /// covers. These are plain inserts, not sled transactions: atomicity across
    /// a crash comes from the write-ahead log, whose record is durable before
    /// this runs and is applied again on open. Callers hold `self.commit`
    /// (or are alone, at open).
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

/// fsyncs a directory (its entries).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fault::inject(Site::CheckpointSync)?;
    File::open(dir)?.sync_all()
}

/// fsyncs every file under `dir` and every directory, making files 0600 and
/// directories 0700 on the way.
fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            private(&path, 0o700)?;
            sync_tree(&path)?;
        } else if kind.is_file() {
            private(&path, 0o600)?;
            fault::inject(Site::CheckpointSync)?;
            File::open(&path)?.sync_all()?;
        }
    }
    private(dir, 0o700)?;
    sync_dir(dir)
}

fn private(path: &Path, mode: u32) -> std::io::Result<()> {
    if std::fs::symlink_metadata(path)?.permissions().mode() & 0o777 != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
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

pub(crate) fn acquire_lock(dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let mut file = wal::open_private(&path, false).map_err(|source| Error::NotWritable { path: dir.to_path_buf(), source })?;
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
    /// The run's next sequence number as sled has it (0 for an unknown run).
    pub(crate) fn head(&self, run: &[u8; 16]) -> Result<u64> {
        let head = self.heads.get(run).map_err(|s| self.sled_err(s))?;
        Ok(head.map_or(0, |v| u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0xff; 8]))))
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        // A store whose open failed, or that is poisoned, changes nothing more on disk.
        if !self.ready {
            return;
        }
        let mut commit = self.lock_commit();
        if commit.poisoned.is_some() {
            return;
        }
        if let Err(e) = self.checkpoint(&mut commit) {
            tracing::warn!(error = %e, "checkpoint at close failed; the write-ahead log keeps the data");
        }
    }
}

impl Store for SledStore {
    fn append(&self, run: &RunRecord, events: &[EventRecord]) -> Result<()> {
        self.append_batch(vec![Append::new(run.clone(), events.to_vec())]).pop().unwrap_or(Ok(()))
    }

    /// Checks each append against the run's head, writes the accepted ones to
    /// the log, syncs it once, and only then applies them to sled and answers
    /// them. A failed write or sync poisons the store and fails every append
    /// of the batch: none is applied, none is answered durable.
    fn append_batch(&self, items: Vec<Append>) -> Vec<Result<()>> {
        let mut commit = self.lock_commit();
        if let Some(cause) = &commit.poisoned {
            return items.iter().map(|_| Err(self.poisoned_error(cause))).collect();
        }
        let mut results: Vec<Result<()>> = Vec::with_capacity(items.len());
        let mut accepted = Vec::new();
        // Heads as they will be once the earlier appends of this batch are applied.
        let mut heads: HashMap<[u8; 16], u64> = HashMap::new();
        for (index, append) in items.iter().enumerate() {
            let run = append.run();
            let Some(prepared) = &append.prepared else {
                if append.events().is_empty() {
                    results.push(Ok(()));
                } else {
                    let first = append.events().first().map_or(0, |e| e.seq);
                    results.push(Err(Error::SequenceConflict { run: run.id.to_string(), expected: first, found: run.next_seq }));
                }
                continue;
            };
            let current = match heads.get(&prepared.entry.run) {
                Some(head) => Ok(*head),
                None => self.head(&prepared.entry.run),
            };
            match current {
                Ok(current) if current == prepared.first_seq => {
                    heads.insert(prepared.entry.run, prepared.entry.head);
                    accepted.push((index, prepared));
                    results.push(Ok(()));
                }
                Ok(current) => results.push(Err(Error::SequenceConflict {
                    run: run.id.to_string(),
                    expected: prepared.first_seq,
                    found: current,
                })),
                Err(e) => results.push(Err(e)),
            }
        }
        if accepted.is_empty() {
            return results;
        }
        let payloads: Vec<&[u8]> = accepted.iter().map(|(_, p)| p.payload.as_slice()).collect();
        let durable = commit.wal.write(&payloads).and_then(|()| {
            self.syncs.fetch_add(1, Ordering::Relaxed);
            commit.wal.sync()
        });
        if let Err(e) = durable {
            let cause = format!("writing {}: {e}", commit.wal.path().display());
            tracing::error!(%cause, "the write-ahead log failed; the store writes nothing more in this process");
            for (index, _) in &accepted {
                results[*index] = Err(self.poisoned_error(&cause));
            }
            commit.poisoned = Some(cause);
            return results;
        }
        for (index, prepared) in &accepted {
            if let Some(cause) = &commit.poisoned {
                results[*index] = Err(self.poisoned_error(cause));
                continue;
            }
            if let Err(e) = self.apply(&prepared.entry) {
                // Durable in the log, which the next process replays; this one stops writing.
                let cause = format!("applying a logged append to sled: {e}");
                results[*index] = Err(self.poisoned_error(&cause));
                commit.poisoned = Some(cause);
            }
        }
        if commit.wal.size() > WAL_CHECKPOINT_BYTES {
            // A failure poisons the store (logged there); these appends are durable already.
            let _ = self.checkpoint(&mut commit);
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
        if let Some(cause) = self.poisoned() {
            return Err(self.poisoned_error(&cause));
        }
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
