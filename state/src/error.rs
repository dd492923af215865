//! The store's error type: every variant names what is wrong and where.

use std::path::PathBuf;

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("state store {} is in use by another dr process{}; one process drives a store's runs at a time: wait for it, or stop it (its run is saved) and try again", path.display(), pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Busy { path: PathBuf, pid: Option<u32> },

    #[error("cannot create state directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot write to state directory {}: {source}", path.display())]
    NotWritable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("state store {} has format version {found}, but this dr reads version {supported}{}; finish its runs with a dr release that reads version {found}, or use a new --state-dir (moving the old one aside)", path.display(), if *found == 1 { " (version 1 predates step outputs, gates and cleanup steps and is not migrated)" } else { "" })]
    UnsupportedFormat { path: PathBuf, found: u8, supported: u8 },

    #[error("corrupted record in {tree} at key {key}{}: {detail}", run.as_ref().map(|r| format!(" (run {r})")).unwrap_or_default())]
    Corrupted { tree: &'static str, key: String, run: Option<String>, detail: String },

    #[error("run {run}: the history is at event {found} but the write continues from event {expected}; another writer touched this run")]
    SequenceConflict { run: String, expected: u64, found: u64 },

    #[error("no run matches {query:?}; `dr list` shows the runs")]
    NotFound { query: String },

    #[error("run {run} finished long ago and its history was removed by `dr gc` ({}); `dr list` and `dr stats` still count it, but its steps, events and report are gone", crate::model::format_millis(*at))]
    Collected { run: String, at: crate::Millis },

    #[error("no run matches {query:?}; did you mean {suggestion}?")]
    DidYouMean { query: String, suggestion: String },

    #[error("{query:?} matches {count} runs ({}); type more of the id", candidates.join(", "))]
    Ambiguous { query: String, candidates: Vec<String>, count: usize },

    #[error("state store {}: {source}", path.display())]
    Sled {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },

    #[error("write-ahead log {} is damaged at byte {offset} and {records_after} valid record(s) follow the damage (runs: {}); opening would drop acknowledged transitions, so nothing was changed: `dr store check` shows the damage, `dr store repair --accept-loss` cuts it and everything after it and lists what each run loses", path.display(), if runs.is_empty() { "unreadable".to_owned() } else { runs.join(", ") })]
    WalDamaged { path: PathBuf, offset: u64, records_after: usize, runs: Vec<String> },

    #[error("write-ahead log {} has format {found}, but this dr reads format {supported}; finish its runs with the dr release that wrote it (its next clean start empties the log), then use this one", path.display())]
    WalFormat { path: PathBuf, found: String, supported: u8 },

    #[error("state store {}: {cause}; this process writes nothing more to the store (what was acknowledged is safe in the write-ahead log): check the disk (dmesg, df), then `dr resume` replays the log and continues", path.display())]
    Poisoned { path: PathBuf, cause: String },

    #[error("state directory {} is writable by others (mode {mode:04o}); dr refuses to write there: check who changed it, then `chmod 700 {}`", path.display(), path.display())]
    InsecureDir { path: PathBuf, mode: u32 },

    #[error("state store {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// True when the same call may succeed later without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Busy { .. } | Error::SequenceConflict { .. })
    }
}

/// `Result` with the store's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
