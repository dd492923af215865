//! [`SledStore`]: the store on disk.
//!
//! Layout of a state directory (mode 0700, every file 0600): `LOCK` (held
//! with `flock` by the one process that owns the store; holds its pid),
//! `wal` (the write-ahead log, see [`crate::wal`]), `sled/` (the sled
//! database). Trees: `runs` (run id → snapshot), `summaries` (run id →
//! summary), `history` (run id ‖ first seq as big-endian u64 → a chunk: the
//! run's events from that seq on, as one value), `archive` (run id → a
//! finished run sealed: snapshot and history compressed together, see
//! [`archive`]; a sealed run has nothing in `runs` or `history`), `open` (run id → (),
//! unfinished runs), `heads` (run id → next seq), `stats` (workflow \0 step →
//! recent durations), `collected` (run id → when `dr gc` removed its history),
//! `meta` (`format` → record format version, `layout` → [`LAYOUT`]).
//!
//! Durability: an append is written to the log and the log `fdatasync`ed
//! before it is applied to the **memtable** (in memory) and acknowledged.
//! Readers see the memtable over sled, so they see only what is durable.
//! sled receives the memtable at checkpoints (open, close, log over 32 MiB):
//! each run touched since the last one gets its latest snapshot and summary
//! written once and its new events as one chunk, then sled is flushed and
//! every file and directory under the state directory fsynced, and only then
//! is the log emptied. Writing a run once per checkpoint instead of once per
//! transition is what keeps a finished run small on disk: sled is
//! log-structured, and every rewrite of a value stays in its files until its
//! segment is reclaimed. Any write, sync or flush error **poisons** the store for the life
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
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::envelope::{decode, encode, FORMAT_VERSION};
use crate::fault::{self, Site};
use crate::model::{EventRecord, RunId, RunRecord, RunSummary};
use crate::wal::{self, Scan, ScanError, Wal, WalEntry};
use crate::{Append, Error, Result, Store, STATS_WINDOW};

mod archive;

/// The layout of the trees: 1 kept one value per event in `events`; 2 keeps
/// chunks in `history` (a layout-1 store is migrated at open).
pub const LAYOUT: u8 = 2;

/// The sled-backed store. One process at a time may open a state directory.
pub struct SledStore {
    dir: PathBuf,
    db: sled::Db,
    runs: sled::Tree,
    summaries: sled::Tree,
    history: sled::Tree,
    open: sled::Tree,
    heads: sled::Tree,
    stats: sled::Tree,
    collected: sled::Tree,
    archive: sled::Tree,
    /// What the log holds that sled does not have yet. Readers look here
    /// first; a checkpoint moves it into sled under the write lock.
    mem: RwLock<Memtable>,
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

/// Appends that are durable in the log but not yet written into sled.
#[derive(Default)]
struct Memtable {
    /// Something was written to sled outside the memtable (at open): the
    /// next checkpoint must flush even with an empty memtable.
    sled_touched: bool,
    runs: HashMap<[u8; 16], Dirty>,
    /// Step-duration windows changed since the last checkpoint (advisory:
    /// not logged, lost with the process like any statistic not yet flushed).
    stats: HashMap<Vec<u8>, Vec<u64>>,
}

/// A run as the log has it past what sled holds.
struct Dirty {
    head: u64,
    terminal: bool,
    snapshot: Vec<u8>,
    summary: Vec<u8>,
    /// Events sled does not hold yet, in sequence order (seq, encoded event).
    events: Vec<(u64, Vec<u8>)>,
}

impl Memtable {
    /// Takes a durable append in (the newer snapshot wins; events are kept once each).
    fn apply(&mut self, entry: WalEntry) {
        let seqs = entry.event_seqs();
        let dirty = self.runs.entry(entry.run).or_insert_with(|| Dirty {
            head: 0,
            terminal: false,
            snapshot: Vec::new(),
            summary: Vec::new(),
            events: Vec::new(),
        });
        for (seq, (_, value)) in seqs.into_iter().zip(entry.events) {
            if dirty.events.last().is_none_or(|(last, _)| *last < seq) {
                dirty.events.push((seq, value));
            }
        }
        if entry.head >= dirty.head {
            dirty.head = entry.head;
            dirty.terminal = entry.terminal;
            dirty.snapshot = entry.snapshot;
            dirty.summary = entry.summary;
        }
    }
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
            // The directories about to be made, from the deepest up.
            let made: Vec<&Path> = dir.ancestors().take_while(|d| !d.as_os_str().is_empty() && !d.exists()).collect();
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(create)?;
            // The umask may have taken bits away (never added): set the mode as it must be.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(create)?;
            // A new directory survives a power cut only once its parent's entry is synced
            // (found by the power-cut test bed): each parent, the deepest first.
            for new in made {
                let parent = match new.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => Path::new("."),
                };
                File::open(parent).and_then(|f| f.sync_all()).map_err(create)?;
            }
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
        // A new store (or one migrated below) must be flushed by the first checkpoint.
        let touched = meta.get("layout").map_err(|source| Error::Sled { path: dir.clone(), source })?.is_none();
        let layout = match meta.get("layout").map_err(|source| Error::Sled { path: dir.clone(), source })? {
            Some(v) => v.first().copied().unwrap_or(0),
            None => 1,
        };
        if layout > LAYOUT || layout == 0 {
            return Err(Error::UnsupportedFormat { path: dir.clone(), found: layout, supported: LAYOUT });
        }
        let wal_path = dir.join("wal");
        let wal = Wal::open(&wal_path, &scanned).map_err(|source| Error::Io { path: wal_path.clone(), source })?;
        let mut store = SledStore {
            runs: tree("runs")?,
            summaries: tree("summaries")?,
            history: tree("history")?,
            open: tree("open")?,
            heads: tree("heads")?,
            stats: tree("stats")?,
            collected: tree("collected")?,
            archive: tree("archive")?,
            mem: RwLock::new(Memtable { sled_touched: touched, ..Memtable::default() }),
            db,
            commit: Mutex::new(Commit { wal, poisoned: None }),
            syncs: AtomicU64::new(0),
            permission_warning,
            ready: false,
            _lock: lock,
            dir,
        };
        if layout < LAYOUT {
            store.migrate_from_layout_1()?;
            meta.insert("layout", &[LAYOUT]).map_err(|s| store.sled_err(s))?;
        }
        let replayed = store.replay_wal(scanned.records.iter().map(|r| r.payload.as_slice()))?;
        if replayed > 0 {
            tracing::info!(replayed, "applied write-ahead log records that sled had not persisted");
        }
        // What the log held is in the memtable and stays in the log until the next
        // checkpoint (at close): a resume after a crash does not pay a checkpoint first.
        // A new or migrated store is made durable now.
        if store.read_mem().sled_touched {
            let mut commit = store.lock_commit();
            store.checkpoint(&mut commit)?;
        }
        store.ready = true;
        Ok(store)
    }

    /// Layout 1 kept one value per event in the tree `events`: each run's
    /// events become one chunk in `history`, then `events` is dropped. A
    /// crash part way redoes it (the chunks are written under the same keys)
    /// because `layout` is set only after.
    fn migrate_from_layout_1(&self) -> Result<()> {
        let had_events = self.db.tree_names().iter().any(|n| n.as_ref() == b"events");
        if !had_events {
            return Ok(());
        }
        let events = self.db.open_tree("events").map_err(|s| self.sled_err(s))?;
        let mut current: Option<([u8; 16], u64, Vec<Vec<u8>>)> = None;
        let mut runs = 0usize;
        for item in events.iter() {
            let (key, value) = item.map_err(|s| self.sled_err(s))?;
            let (Some(run), Some(seq)) = (key.get(..16).and_then(|b| <[u8; 16]>::try_from(b).ok()), seq_of(&key)) else {
                continue;
            };
            match &mut current {
                Some((r, _, chunk)) if *r == run => chunk.push(value.to_vec()),
                _ => {
                    if let Some((r, first, chunk)) = current.take() {
                        self.history.insert(event_key_raw(&r, first), encode(&chunk)).map_err(|s| self.sled_err(s))?;
                        runs += 1;
                    }
                    current = Some((run, seq, vec![value.to_vec()]));
                }
            }
        }
        if let Some((r, first, chunk)) = current.take() {
            self.history.insert(event_key_raw(&r, first), encode(&chunk)).map_err(|s| self.sled_err(s))?;
            runs += 1;
        }
        self.db.flush().map_err(|s| self.sled_err(s))?;
        self.db.drop_tree("events").map_err(|s| self.sled_err(s))?;
        tracing::info!(runs, "migrated the store's histories to layout {LAYOUT} (one chunk per run)");
        Ok(())
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
        // The memtable first, so that the checkpoint does not write the good record back.
        self.checkpoint_now()?;
        self.runs.insert(id.as_bytes(), bytes).map_err(|source| self.sled_err(source))?;
        self.summaries.insert(id.as_bytes(), bytes).map_err(|source| self.sled_err(source))?;
        self.checkpoint_now()
    }

    /// A checkpoint now, as at close, even when nothing was appended (a test
    /// may have written to sled behind the store's back).
    #[cfg(any(test, feature = "test-util"))]
    pub(crate) fn checkpoint_now(&self) -> Result<()> {
        self.write_mem().sled_touched = true;
        let mut commit = self.lock_commit();
        self.checkpoint(&mut commit)
    }

    fn lock_commit(&self) -> MutexGuard<'_, Commit> {
        self.commit.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn poisoned_error(&self, cause: &str) -> Error {
        Error::Poisoned { path: self.dir.clone(), cause: cause.to_owned() }
    }

    fn read_mem(&self) -> RwLockReadGuard<'_, Memtable> {
        self.mem.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_mem(&self) -> RwLockWriteGuard<'_, Memtable> {
        self.mem.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the memtable into sled, makes everything sled wrote durable
    /// (flush, then fsync of every file and directory under the state
    /// directory), then empties the log. A failure poisons the store: the log
    /// is never emptied on the strength of a failed or retried sync.
    fn checkpoint(&self, commit: &mut Commit) -> Result<()> {
        if let Some(cause) = &commit.poisoned {
            return Err(self.poisoned_error(cause));
        }
        {
            // Nothing written since the last checkpoint (a reading command): sled's files
            // are as durable as that checkpoint left them, and the log is empty.
            let mem = self.read_mem();
            if !mem.sled_touched && mem.runs.is_empty() && mem.stats.is_empty() && commit.wal.size() <= wal::HEADER_LEN {
                return Ok(());
            }
        }
        let written = self.write_memtable().map_err(|e| format!("writing to sled: {e}"));
        let flushed = written.and_then(|()| self.db.flush().map(drop).map_err(|e| format!("flushing sled: {e}")));
        let synced = flushed.and_then(|()| {
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

    /// Moves the memtable into sled (in memory: durable only once flushed).
    /// Per run: its new events as one chunk first, its snapshot, summary and
    /// open mark, its head last, so that sled's own log (persisted in order)
    /// never holds a head without what it covers. Plain inserts, not sled
    /// transactions: atomicity across a crash comes from the write-ahead log,
    /// which still holds all of it until the checkpoint completes. The
    /// memtable is emptied only when every insert succeeded.
    fn write_memtable(&self) -> Result<()> {
        let sled = |e| self.sled_err(e);
        let mut mem = self.write_mem();
        for (run, dirty) in &mem.runs {
            let key = &run[..];
            if dirty.terminal {
                // Sealed whole; what sled held of it apart is removed after the seal is in.
                let mut events = self.stored_events(run)?;
                let (first, encoded) = merge_events(&mut events, &dirty.events, dirty.head);
                let sealed = archive::Sealed { snapshot: dirty.snapshot.clone(), first, events: encoded };
                self.archive.insert(key, archive::seal(&sealed)).map_err(sled)?;
                for chunk in self.history.scan_prefix(key).keys() {
                    self.history.remove(chunk.map_err(sled)?).map_err(sled)?;
                }
                self.runs.remove(key).map_err(sled)?;
            } else {
                if let Some((first, _)) = dirty.events.first() {
                    let chunk: Vec<&[u8]> = dirty.events.iter().map(|(_, v)| v.as_slice()).collect();
                    self.history.insert(event_key_raw(run, *first), archive::pack(&encode(&chunk))).map_err(sled)?;
                }
                self.runs.insert(key, archive::pack(&dirty.snapshot)).map_err(sled)?;
            }
            self.summaries.insert(key, dirty.summary.as_slice()).map_err(sled)?;
            if dirty.terminal {
                self.open.remove(key).map_err(sled)?;
            } else {
                self.open.insert(key, &[][..]).map_err(sled)?;
            }
            self.heads.insert(key, &dirty.head.to_be_bytes()[..]).map_err(sled)?;
        }
        for (key, window) in &mem.stats {
            self.stats.insert(key.as_slice(), encode(window)).map_err(sled)?;
        }
        mem.runs.clear();
        mem.stats.clear();
        mem.sled_touched = false;
        Ok(())
    }

    /// Takes the log's entries into the memtable, but for those sled already
    /// holds (their head is behind sled's). An entry at sled's head is taken
    /// again (same bytes), in case sled kept the head but not all it covers.
    fn replay_wal<'a>(&self, entries: impl Iterator<Item = &'a [u8]>) -> Result<usize> {
        let mut applied = 0;
        for (index, payload) in entries.enumerate() {
            let entry: WalEntry = decode(payload).map_err(|detail| Error::Corrupted {
                tree: "wal",
                key: format!("record {index}"),
                run: None,
                detail,
            })?;
            if self.head(&entry.run)? <= entry.head {
                self.write_mem().apply(entry);
                applied += 1;
            }
        }
        Ok(applied)
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
    event_key_raw(id.as_bytes(), seq)
}

fn event_key_raw(run: &[u8; 16], seq: u64) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(run);
    key[16..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// `stored` (sorted, each seq once) followed by the `pending` events it does
/// not hold, cut at `head`: the first seq and the encoded events in order.
fn merge_events(stored: &mut Vec<(u64, Vec<u8>)>, pending: &[(u64, Vec<u8>)], head: u64) -> (u64, Vec<Vec<u8>>) {
    for (seq, bytes) in pending {
        if stored.last().is_none_or(|(last, _)| last < seq) {
            stored.push((*seq, bytes.clone()));
        }
    }
    stored.retain(|(seq, _)| *seq < head);
    let first = stored.first().map_or(0, |(seq, _)| *seq);
    (first, std::mem::take(stored).into_iter().map(|(_, bytes)| bytes).collect())
}

/// The sequence number in an event or chunk key.
fn seq_of(key: &[u8]) -> Option<u64> {
    key.get(16..24).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes)
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
    /// The run's next sequence number (0 for an unknown run).
    pub(crate) fn head(&self, run: &[u8; 16]) -> Result<u64> {
        if let Some(dirty) = self.read_mem().runs.get(run) {
            return Ok(dirty.head);
        }
        self.sled_head(run)
    }

    /// The run's next sequence number as sled has it.
    fn sled_head(&self, run: &[u8; 16]) -> Result<u64> {
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
        let mut accepted: Vec<(usize, &wal::Prepared)> = Vec::new();
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
        // Durable: readers may see them now.
        let mut take = vec![false; items.len()];
        for (index, _) in accepted {
            take[index] = true;
        }
        {
            let mut mem = self.write_mem();
            for (append, take) in items.into_iter().zip(take) {
                if let (true, Some(prepared)) = (take, append.prepared) {
                    mem.apply(prepared.entry);
                }
            }
        }
        if commit.wal.size() > WAL_CHECKPOINT_BYTES {
            // A failure poisons the store (logged there); these appends are durable already.
            let _ = self.checkpoint(&mut commit);
        }
        results
    }

    fn load(&self, id: RunId) -> Result<Option<RunRecord>> {
        let key = id.as_bytes();
        let corrupted = |tree, detail| Error::Corrupted { tree, key: id.to_string(), run: Some(id.to_string()), detail };
        let mem = self.read_mem();
        let bytes = if let Some(dirty) = mem.runs.get(key) {
            dirty.snapshot.clone()
        } else if let Some(value) = self.runs.get(key).map_err(|s| self.sled_err(s))? {
            archive::unpack(&value).map_err(|detail| corrupted("runs", detail))?.into_owned()
        } else if let Some(value) = self.archive.get(key).map_err(|s| self.sled_err(s))? {
            archive::open(&value).map_err(|detail| corrupted("archive", detail))?.snapshot
        } else {
            drop(mem);
            return match self.collected_at(id)? {
                Some(at) => Err(Error::Collected { run: id.to_string(), at }),
                None => Ok(None),
            };
        };
        drop(mem);
        decode(&bytes).map(Some).map_err(|detail| corrupted("runs", detail))
    }

    fn events(&self, id: RunId) -> Result<Vec<EventRecord>> {
        // One consistent view: a checkpoint moves the memtable into sled under the write lock.
        let mem = self.read_mem();
        let dirty = mem.runs.get(id.as_bytes());
        // Events at or past the head belong to an append that never completed.
        let head = match dirty {
            Some(d) => d.head,
            None => self.sled_head(id.as_bytes())?,
        };
        let mut stored = self.stored_events(id.as_bytes())?;
        if stored.is_empty() && dirty.is_none() {
            if let Some(at) = self.collected_at(id)? {
                return Err(Error::Collected { run: id.to_string(), at });
            }
        }
        let (first, encoded) = merge_events(&mut stored, dirty.map_or(&[][..], |d| &d.events), head);
        drop(mem);
        let mut out: Vec<EventRecord> = Vec::with_capacity(encoded.len());
        for (seq, bytes) in (first..).zip(encoded) {
            let corrupted = |detail| Error::Corrupted { tree: "history", key: format!("{id}/{seq}"), run: Some(id.to_string()), detail };
            let event: EventRecord = decode(&bytes).map_err(corrupted)?;
            if event.seq != seq {
                return Err(corrupted(format!("holds event {} where event {seq} belongs", event.seq)));
            }
            out.push(event);
        }
        Ok(out)
    }

    fn summaries(&self) -> Result<Vec<Result<RunSummary>>> {
        let decode_one = |key: &[u8], value: &[u8]| {
            decode::<RunSummary>(value).map_err(|detail| {
                let label = RunId::from_key(key).map(|id| id.to_string()).unwrap_or_else(|| format!("{key:?}"));
                Error::Corrupted { tree: "summaries", key: label.clone(), run: Some(label), detail }
            })
        };
        let mem = self.read_mem();
        // (Not `Tree::len`: sled counts by reading every entry.)
        let mut out: Vec<([u8; 16], Result<RunSummary>)> = Vec::new();
        for item in self.summaries.iter() {
            let (key, value) = item.map_err(|s| self.sled_err(s))?;
            let Ok(run) = <[u8; 16]>::try_from(key.as_ref()) else { continue };
            if !mem.runs.contains_key(&run) {
                out.push((run, decode_one(&key, &value)));
            }
        }
        if !mem.runs.is_empty() {
            out.extend(mem.runs.iter().map(|(run, d)| (*run, decode_one(run, &d.summary))));
            out.sort_unstable_by_key(|(run, _)| *run);
        }
        Ok(out.into_iter().map(|(_, s)| s).collect())
    }

    fn open_runs(&self) -> Result<Vec<RunId>> {
        let mem = self.read_mem();
        let mut ids: Vec<[u8; 16]> = Vec::new();
        for key in self.open.iter().keys() {
            let key = key.map_err(|s| self.sled_err(s))?;
            match <[u8; 16]>::try_from(key.as_ref()) {
                Ok(run) if !mem.runs.contains_key(&run) => ids.push(run),
                _ => {}
            }
        }
        ids.extend(mem.runs.iter().filter(|(_, d)| !d.terminal).map(|(run, _)| *run));
        ids.sort_unstable();
        Ok(ids.iter().filter_map(|k| RunId::from_key(k)).collect())
    }

    fn run_ids(&self) -> Result<Vec<RunId>> {
        let mem = self.read_mem();
        let mut ids: Vec<[u8; 16]> = Vec::new();
        for key in self.heads.iter().keys() {
            let key = key.map_err(|s| self.sled_err(s))?;
            match <[u8; 16]>::try_from(key.as_ref()) {
                Ok(run) if !mem.runs.contains_key(&run) => ids.push(run),
                _ => {}
            }
        }
        ids.extend(mem.runs.keys().copied());
        ids.sort_unstable();
        Ok(ids.iter().filter_map(|k| RunId::from_key(k)).collect())
    }

    fn record_duration(&self, workflow: &str, step: &str, millis: u64) -> Result<()> {
        if let Some(cause) = self.poisoned() {
            return Err(self.poisoned_error(&cause));
        }
        let key = stats_key(workflow, step);
        let mut mem = self.write_mem();
        let window = match mem.stats.remove(&key) {
            Some(window) => window,
            None => self.sled_durations(&key)?,
        };
        let mut window = window;
        window.push(millis);
        if window.len() > STATS_WINDOW {
            let excess = window.len() - STATS_WINDOW;
            window.drain(..excess);
        }
        mem.stats.insert(key, window);
        Ok(())
    }

    fn gc(&self, finished_before: crate::Millis, now: crate::Millis, dry_run: bool) -> Result<Vec<RunSummary>> {
        let mut commit = self.lock_commit();
        if let Some(cause) = &commit.poisoned {
            return Err(self.poisoned_error(cause));
        }
        if !dry_run {
            // The memtable into sled first: then every finished run is in sled alone.
            self.checkpoint(&mut commit)?;
        }
        let mut chosen = Vec::new();
        for summary in self.summaries()? {
            // A summary that cannot be read is left alone (dr list names it).
            let Ok(s) = summary else { continue };
            let ended_before = s.status.is_terminal() && s.finished_at.is_some_and(|f| f < finished_before);
            let has_remains = || -> Result<bool> {
                let key = s.id.as_bytes();
                let sled = |e| self.sled_err(e);
                Ok(self.collected.get(key).map_err(sled)?.is_none()
                    || self.archive.contains_key(key).map_err(sled)?
                    || self.runs.contains_key(key).map_err(sled)?
                    || self.history.scan_prefix(key).next().is_some())
            };
            if ended_before && has_remains()? {
                chosen.push(s);
            }
        }
        if dry_run || chosen.is_empty() {
            return Ok(chosen);
        }
        self.write_mem().sled_touched = true;
        if let Err(e) = self.remove_histories(&chosen, now) {
            let cause = format!("removing collected runs: {e}");
            commit.poisoned = Some(cause.clone());
            return Err(self.poisoned_error(&cause));
        }
        self.checkpoint(&mut commit)?;
        tracing::info!(runs = chosen.len(), "dr gc removed the histories of finished runs");
        Ok(chosen)
    }

    fn durations(&self, workflow: &str, step: &str) -> Result<Vec<u64>> {
        let key = stats_key(workflow, step);
        if let Some(window) = self.read_mem().stats.get(&key) {
            return Ok(window.clone());
        }
        self.sled_durations(&key)
    }
}

impl SledStore {
    /// The writes of `dr gc` (see [`Store::gc`]): every chosen run is
    /// marked collected first, then its snapshot, seal and chunks are
    /// removed, then a checkpoint makes it durable. A crash part way leaves
    /// marked runs whose remains the next `dr gc` removes (they are chosen
    /// again: a marked run still has its summary).
    fn remove_histories(&self, chosen: &[RunSummary], now: crate::Millis) -> Result<(), sled::Error> {
        for s in chosen {
            self.collected.insert(s.id.as_bytes(), &now.to_be_bytes()[..])?;
        }
        for s in chosen {
            let key = s.id.as_bytes();
            self.archive.remove(key)?;
            self.runs.remove(key)?;
            self.open.remove(key)?;
            for chunk in self.history.scan_prefix(key).keys() {
                self.history.remove(chunk?)?;
            }
        }
        Ok(())
    }

    /// Every event sled holds of a run (sealed or in chunks), each once, in
    /// order: (seq, encoded event).
    fn stored_events(&self, run: &[u8; 16]) -> Result<Vec<(u64, Vec<u8>)>> {
        let id = RunId::from_key(run).map_or_else(|| format!("{run:02x?}"), |id| id.to_string());
        let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
        if let Some(value) = self.archive.get(run).map_err(|s| self.sled_err(s))? {
            let sealed = archive::open(&value).map_err(|detail| Error::Corrupted {
                tree: "archive",
                key: id.clone(),
                run: Some(id.clone()),
                detail,
            })?;
            out.extend((sealed.first..).zip(sealed.events));
        }
        for item in self.history.scan_prefix(run) {
            let (key, value) = item.map_err(|s| self.sled_err(s))?;
            let first = seq_of(&key).unwrap_or(u64::MAX);
            let chunk: Vec<Vec<u8>> = archive::unpack(&value).and_then(|plain| decode(&plain)).map_err(|detail| Error::Corrupted {
                tree: "history",
                key: format!("{id}/{first}"),
                run: Some(id.clone()),
                detail,
            })?;
            out.extend((first..).zip(chunk));
        }
        // Chunks written again after a crash may overlap: each event once, in order.
        out.sort_by_key(|(seq, _)| *seq);
        out.dedup_by_key(|(seq, _)| *seq);
        Ok(out)
    }

    fn sled_durations(&self, key: &[u8]) -> Result<Vec<u64>> {
        let Some(bytes) = self.stats.get(key).map_err(|s| self.sled_err(s))? else {
            return Ok(Vec::new());
        };
        // Statistics are advisory: a damaged window is treated as empty.
        Ok(decode(&bytes).unwrap_or_default())
    }

    /// When `dr gc` removed the run's history, if it did.
    fn collected_at(&self, id: RunId) -> Result<Option<crate::Millis>> {
        let at = self.collected.get(id.as_bytes()).map_err(|s| self.sled_err(s))?;
        Ok(at.and_then(|v| v.as_ref().try_into().ok()).map(i64::from_be_bytes))
    }
}

#[cfg(test)]
mod tests;
