//! The orchestrator's error type.

use dr_state::RunId;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] dr_state::Error),

    #[error(transparent)]
    Catalog(#[from] crate::CatalogError),

    #[error("run {run}: the definition of workflow {workflow} changed since the run started ({changes}); resume with --allow-definition-change to continue with the new definition")]
    DefinitionChanged { run: RunId, workflow: String, changes: String },

    #[error("run {run}: the configuration changed since the run started (digest {pinned} then, {now} now); restore the file, or resume with --allow-definition-change to continue with the new configuration")]
    ConfigChanged { run: RunId, pinned: String, now: String },

    #[error("run {run}: its snapshot disagrees with its event history ({detail}); the run cannot be resumed safely, inspect it with `dr history {run}`")]
    HistoryMismatch { run: RunId, detail: String },

    #[error("run {run}: {detail}")]
    Invariant { run: RunId, detail: String },

    #[error("run {run} ({status}): {detail}")]
    NotApplicable { run: RunId, status: &'static str, detail: String },

    #[error("run {run} has no step {step:?}; its steps are: {known}")]
    UnknownStep { run: RunId, step: String, known: String },

    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// True when the same call may succeed later without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Store(e) if e.is_retryable())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
