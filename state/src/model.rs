//! The records of the store, format version 1: a run's snapshot, its events,
//! its summary. These are plain data; what they mean (how an event changes a
//! snapshot) is the orchestrator's business.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Milliseconds since the Unix epoch (UTC).
pub type Millis = i64;

/// The id of a run: a UUIDv7, so ids sort by creation time.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RunId(pub Uuid);

impl RunId {
    /// A new id whose leading bits are the given creation time.
    pub fn new_v7(now: Millis, random: u128) -> Self {
        let millis = u64::try_from(now.max(0)).unwrap_or(0);
        let mut bytes = random.to_be_bytes();
        bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
        bytes[6] = (bytes[6] & 0x0f) | 0x70; // version 7
        bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
        RunId(Uuid::from_bytes(bytes))
    }

    /// The 16 bytes that key this run in the store.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// Reads a run id back from a store key.
    pub fn from_key(key: &[u8]) -> Option<Self> {
        let bytes: [u8; 16] = key.get(..16)?.try_into().ok()?;
        Some(RunId(Uuid::from_bytes(bytes)))
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RunId({self})")
    }
}

impl FromStr for RunId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(RunId)
    }
}

/// Where a run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RunStatus {
    Running,
    /// Waiting for an operator: a step ran out of retries or needs confirmation.
    Paused,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunStatus {
    /// Succeeded, failed and cancelled runs never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Paused => "paused",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

/// Where a step stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StepStatus {
    Pending,
    Running,
    /// Waiting for a timer (retry backoff) or for an operator's decision.
    Waiting,
    Succeeded,
    /// Out of retries; the run is paused (or failed, for a fatal step).
    Failed,
    Skipped,
}

impl StepStatus {
    /// Succeeded or skipped: the step's dependants may start.
    pub fn is_done(self) -> bool {
        matches!(self, StepStatus::Succeeded | StepStatus::Skipped)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Waiting => "waiting",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
        }
    }
}

/// One step of a run, as of the run's latest event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub id: String,
    pub status: StepStatus,
    /// Attempts started so far (the attempt number of the latest one).
    pub attempts: u32,
    /// Failed attempts since the step last got a fresh retry budget.
    pub failures: u32,
    /// When the first attempt started.
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    /// When the latest attempt (or probe) started.
    pub attempt_started_at: Option<Millis>,
    /// The latest attempt's deadline (its timeout), durable across restarts.
    pub attempt_deadline: Option<Millis>,
    /// The run epoch (process incarnation) the latest attempt belongs to.
    pub attempt_epoch: u32,
    /// True while the step's probe (not its action) is running.
    pub probing: bool,
    /// When a waiting step may start its next attempt (durable backoff).
    pub wait_until: Option<Millis>,
    /// True while the step waits for `dr approve` or `dr skip`.
    pub awaiting_operator: bool,
    pub last_error: Option<String>,
    /// A short summary of the latest successful attempt's output.
    pub output: Option<String>,
    /// Why an operator skipped the step.
    pub skip_reason: Option<String>,
}

impl StepRecord {
    pub fn new(id: impl Into<String>) -> Self {
        StepRecord {
            id: id.into(),
            status: StepStatus::Pending,
            attempts: 0,
            failures: 0,
            started_at: None,
            finished_at: None,
            attempt_started_at: None,
            attempt_deadline: None,
            attempt_epoch: 0,
            probing: false,
            wait_until: None,
            awaiting_operator: false,
            last_error: None,
            output: None,
            skip_reason: None,
        }
    }
}

/// The snapshot of a run: everything its events add up to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: RunId,
    pub workflow: String,
    /// Hash of the workflow definition the run started with.
    pub definition_hash: String,
    /// Per-step hashes of that definition, to say what changed.
    pub definition_steps: Vec<(String, String)>,
    pub params: BTreeMap<String, String>,
    pub level: u8,
    pub target_secs: u64,
    pub status: RunStatus,
    /// Why the run is paused, failed or cancelled.
    pub reason: Option<String>,
    pub incident_at: Millis,
    pub started_at: Millis,
    pub finished_at: Option<Millis>,
    pub updated_at: Millis,
    /// Sequence number of the next event (= number of events so far).
    pub next_seq: u64,
    /// Process incarnation: bumped each time a process takes the run up again.
    pub epoch: u32,
    pub cancel_requested: bool,
    pub steps: Vec<StepRecord>,
}

impl RunRecord {
    pub fn step(&self, id: &str) -> Option<&StepRecord> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// The summary kept beside the snapshot for listings.
    pub fn summary(&self) -> RunSummary {
        RunSummary {
            id: self.id,
            workflow: self.workflow.clone(),
            level: self.level,
            target_secs: self.target_secs,
            status: self.status,
            reason: self.reason.clone(),
            incident_at: self.incident_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            updated_at: self.updated_at,
            steps_total: u32::try_from(self.steps.len()).unwrap_or(u32::MAX),
            steps_done: u32::try_from(self.steps.iter().filter(|s| s.status.is_done()).count())
                .unwrap_or(u32::MAX),
        }
    }
}

/// A run without its steps: what `dr list` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    pub id: RunId,
    pub workflow: String,
    pub level: u8,
    pub target_secs: u64,
    pub status: RunStatus,
    pub reason: Option<String>,
    pub incident_at: Millis,
    pub started_at: Millis,
    pub finished_at: Option<Millis>,
    pub updated_at: Millis,
    pub steps_total: u32,
    pub steps_done: u32,
}

/// One entry of a run's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub seq: u64,
    pub at: Millis,
    pub event: Event,
}

/// What happened to a run. The history is the list of these; the snapshot is
/// their fold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// The run was created with this initial snapshot.
    RunCreated { initial: Box<RunRecord> },
    /// A process took the run up again (after a crash, `dr resume`, a restart).
    RunResumed { epoch: u32, by: String },
    /// The operator let the run continue under a changed workflow definition.
    DefinitionReplaced { definition_hash: String, definition_steps: Vec<(String, String)> },
    StepStarted { step: String, attempt: u32, epoch: u32, deadline: Option<Millis> },
    StepSucceeded { step: String, attempt: u32, duration_ms: u64, output: Option<String> },
    /// An attempt failed; `retry_at` is when the next one starts, or `None`
    /// when the step is out of retries.
    StepFailed { step: String, attempt: u32, error: String, retry_at: Option<Millis> },
    /// An attempt was lost with the process that ran it; the step runs again.
    StepInterrupted { step: String, attempt: u32 },
    /// The step's probe started: it tells whether a lost attempt took effect.
    StepProbing { step: String, attempt: u32, epoch: u32 },
    StepProbed { step: String, attempt: u32, took_effect: bool, detail: String },
    /// The step waits for `dr approve` or `dr skip`.
    StepAwaitingOperator { step: String, reason: String },
    StepCancelled { step: String, attempt: u32 },
    OperatorApproved { step: String },
    OperatorSkipped { step: String, reason: String },
    RetryRequested { step: String },
    CancelRequested { reason: String },
    /// The process driving the run stopped on a signal; the run can be resumed.
    ProcessStopped { signal: String },
    RunPaused { reason: String },
    RunSucceeded,
    RunFailed { reason: String },
    RunCancelled { reason: String },
}

impl Event {
    /// A short name for listings (`dr history`).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::RunCreated { .. } => "run-created",
            Event::RunResumed { .. } => "run-resumed",
            Event::DefinitionReplaced { .. } => "definition-replaced",
            Event::StepStarted { .. } => "step-started",
            Event::StepSucceeded { .. } => "step-succeeded",
            Event::StepFailed { .. } => "step-failed",
            Event::StepInterrupted { .. } => "step-interrupted",
            Event::StepProbing { .. } => "step-probing",
            Event::StepProbed { .. } => "step-probed",
            Event::StepAwaitingOperator { .. } => "step-awaiting-operator",
            Event::StepCancelled { .. } => "step-cancelled",
            Event::OperatorApproved { .. } => "operator-approved",
            Event::OperatorSkipped { .. } => "operator-skipped",
            Event::RetryRequested { .. } => "retry-requested",
            Event::CancelRequested { .. } => "cancel-requested",
            Event::ProcessStopped { .. } => "process-stopped",
            Event::RunPaused { .. } => "run-paused",
            Event::RunSucceeded => "run-succeeded",
            Event::RunFailed { .. } => "run-failed",
            Event::RunCancelled { .. } => "run-cancelled",
        }
    }

    /// The step this event is about, if any.
    pub fn step(&self) -> Option<&str> {
        match self {
            Event::StepStarted { step, .. }
            | Event::StepSucceeded { step, .. }
            | Event::StepFailed { step, .. }
            | Event::StepInterrupted { step, .. }
            | Event::StepProbing { step, .. }
            | Event::StepProbed { step, .. }
            | Event::StepAwaitingOperator { step, .. }
            | Event::StepCancelled { step, .. }
            | Event::OperatorApproved { step }
            | Event::OperatorSkipped { step, .. }
            | Event::RetryRequested { step } => Some(step),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v7_ids_sort_by_time_and_parse_back() {
        let a = RunId::new_v7(1_700_000_000_000, u128::MAX);
        let b = RunId::new_v7(1_700_000_000_001, 0);
        assert!(a < b);
        assert_eq!(a.0.get_version_num(), 7);
        assert_eq!(a.to_string().parse::<RunId>().unwrap(), a);
        assert_eq!(RunId::from_key(a.as_bytes()), Some(a));
    }
}
