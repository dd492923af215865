//! The durable store of `dr`: run snapshots, their append-only event history,
//! an index of unfinished runs, run summaries and step-duration statistics.
//!
//! Owns: the on-disk schema (the record types in [`model`], format
//! [`FORMAT_VERSION`]), the versioned bincode envelope, durability (a
//! write-ahead log record `fdatasync`ed before sled is touched; sled flushed
//! and fsynced at checkpoints; any I/O error poisons the store), checking and
//! repairing a damaged log ([`check`], [`repair`]), the modes of the state
//! directory (0700) and its files (0600), and the single-process lock on it.
//! Group commit is the caller's: one `append_batch` is one sync (the runner's
//! writer thread batches).
//!
//! Refuses: any knowledge of Kubernetes, SSH, etcd or the command line. It
//! stores what the orchestrator hands it and checks only what a store can
//! check (contiguous event sequence numbers, record versions).

mod envelope;
mod error;
pub mod model;
mod fault;
mod repair;
mod sled_store;
mod wal;

#[cfg(any(test, feature = "test-util"))]
mod mem;

pub use envelope::{decode, encode, FORMAT_VERSION};
pub use error::{Error, Result};
#[cfg(any(test, feature = "test-util"))]
pub use mem::MemStore;
pub use model::*;
pub use repair::{check, repair, CheckReport, RepairReport, RunLoss, WalDamage};
pub use sled_store::{SledStore, SyncStats};
pub use wal::WAL_FORMAT;

/// What the orchestrator needs from a store. Every method is blocking; call
/// from a blocking-capable context (the runner uses `spawn_blocking`).
pub trait Store: Send + Sync + 'static {
    /// Writes the new snapshot of `run` together with `events` (which must
    /// continue the run's history without a gap), all or nothing, and returns
    /// only once they are durable on disk. An error means "not acknowledged":
    /// the append may or may not be found by the next process.
    fn append(&self, run: &RunRecord, events: &[EventRecord]) -> Result<()>;

    /// Appends for several runs at once, made durable together (one sync for
    /// the batch). Each item succeeds or fails on its own.
    fn append_batch(&self, items: Vec<Append>) -> Vec<Result<()>> {
        items.iter().map(|a| self.append(a.run(), a.events())).collect()
    }

    /// The latest snapshot of a run.
    fn load(&self, id: RunId) -> Result<Option<RunRecord>>;

    /// The run's whole event history, in sequence order.
    fn events(&self, id: RunId) -> Result<Vec<EventRecord>>;

    /// Every run's summary, oldest first. A summary that cannot be decoded is
    /// returned as an error in its place, so one bad record hides nothing else.
    fn summaries(&self) -> Result<Vec<Result<RunSummary>>>;

    /// Ids of the runs that are not finished (running or paused), oldest first.
    fn open_runs(&self) -> Result<Vec<RunId>>;

    /// Ids of all runs, oldest first (run ids are time-ordered UUIDv7).
    fn run_ids(&self) -> Result<Vec<RunId>>;

    /// Adds one observed duration of a successful step to the statistics.
    fn record_duration(&self, workflow: &str, step: &str, millis: u64) -> Result<()>;

    /// The most recent observed durations of a step (at most [`STATS_WINDOW`]).
    fn durations(&self, workflow: &str, step: &str) -> Result<Vec<u64>>;

    /// `dr gc`: removes the snapshot and history of every finished run that
    /// ended before `finished_before`, keeping its summary (so listings,
    /// `dr stats` and MTTR still count it) and the step-duration statistics;
    /// the run is marked collected at `now`, and reading it answers
    /// [`Error::Collected`]. With `dry_run`, changes nothing. Returns the
    /// summaries of the runs chosen, oldest first. Durable when it returns.
    fn gc(&self, finished_before: Millis, now: Millis, dry_run: bool) -> Result<Vec<RunSummary>>;

    /// Resolves what an operator typed for a run: a full id, a unique prefix
    /// of one, or `@latest`.
    fn resolve(&self, query: &str) -> Result<RunId> {
        let ids = self.run_ids()?;
        resolve_in(&ids, query)
    }
}

/// An append with its records already encoded, so that the encoding happens
/// on the caller's thread and a single writer only writes.
pub struct Append {
    run: RunRecord,
    events: Vec<EventRecord>,
    /// `None` when the events do not continue each other up to the snapshot.
    prepared: Option<wal::Prepared>,
}

impl Append {
    pub fn new(run: RunRecord, events: Vec<EventRecord>) -> Self {
        let prepared = wal::Prepared::new(&run, &events);
        Append { run, events, prepared }
    }

    pub fn run(&self) -> &RunRecord {
        &self.run
    }

    pub fn events(&self) -> &[EventRecord] {
        &self.events
    }
}

impl std::fmt::Debug for Append {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Append").field("run", &self.run.id).field("events", &self.events.len()).finish()
    }
}

/// How many durations per step the statistics keep.
pub const STATS_WINDOW: usize = 64;

/// Resolves `query` against `ids` (oldest first).
pub fn resolve_in(ids: &[RunId], query: &str) -> Result<RunId> {
    let query = query.trim();
    if query == "@latest" {
        return ids.last().copied().ok_or_else(|| Error::NotFound { query: query.to_owned() });
    }
    let needle = query.to_ascii_lowercase();
    if needle.is_empty() {
        return Err(Error::NotFound { query: query.to_owned() });
    }
    let matches: Vec<RunId> = ids
        .iter()
        .copied()
        .filter(|id| {
            let full = id.to_string();
            full.starts_with(&needle) || full.replace('-', "").starts_with(&needle)
        })
        .collect();
    match matches.as_slice() {
        // A word for the newest run, typed without its @.
        [] if ["latest", "last", "newest", "@last", "@newest", "@lastest"].contains(&needle.as_str()) => {
            Err(Error::DidYouMean { query: query.to_owned(), suggestion: "@latest".into() })
        }
        [] => Err(Error::NotFound { query: query.to_owned() }),
        [one] => Ok(*one),
        many => Err(Error::Ambiguous {
            query: query.to_owned(),
            candidates: many.iter().take(5).map(|id| id.to_string()).collect(),
            count: many.len(),
        }),
    }
}
