//! The records of the store, format version 2: a run's snapshot, its events,
//! its summary. These are plain data; what they mean (how an event changes a
//! snapshot) is the orchestrator's business.
//!
//! A step's state is one enum ([`StepState`]) whose variants carry exactly the
//! data that state has (a running attempt its epoch and deadline, a succeeded
//! step its output, a skipped one its reason), so no combination of fields can
//! contradict another. Instants are [`Millis`] (ms since the Unix epoch),
//! lengths of time [`DurationMs`].

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An instant: milliseconds since the Unix epoch (UTC).
pub type Millis = i64;

/// An instant as `YYYY-MM-DD HH:MM UTC`, for messages.
pub fn format_millis(at: Millis) -> String {
    let secs = at.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rest / 3600, rest % 3600 / 60)
}

/// A length of time in milliseconds.
pub type DurationMs = u64;

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

/// The id of a step within its workflow (`drain`, `step-3`, `restore-etcd`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StepId(String);

impl StepId {
    pub fn new(id: impl Into<String>) -> Self {
        StepId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl From<&str> for StepId {
    fn from(id: &str) -> Self {
        StepId(id.to_owned())
    }
}

impl From<String> for StepId {
    fn from(id: String) -> Self {
        StepId(id)
    }
}

impl std::borrow::Borrow<str> for StepId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for StepId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for StepId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for StepId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// Where a run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RunStatus {
    /// Steps run (or, once the run is ending, its cleanup steps).
    Running,
    /// Waiting for an operator: a step ran out of retries, waits at its gate,
    /// or was interrupted and needs a decision.
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

/// How a run's main steps came to an end; its cleanup steps run after.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ending {
    Succeeded,
    Failed { reason: String },
    Cancelled { reason: String },
}

impl Ending {
    pub fn as_str(&self) -> &'static str {
        match self {
            Ending::Succeeded => "succeeded",
            Ending::Failed { .. } => "failed",
            Ending::Cancelled { .. } => "cancelled",
        }
    }
}

/// What a successful attempt produced: a summary line for people and a JSON
/// value for the steps that depend on it. Kept whole (never cut) in the event
/// and the snapshot; the engine bounds its size.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepOutput {
    pub summary: String,
    /// JSON text (`null` when the step produces no value). Text, because the
    /// store's encoding (bincode) cannot carry a self-describing value.
    pub value: String,
}

impl StepOutput {
    pub fn summary(summary: impl Into<String>) -> Self {
        StepOutput { summary: summary.into(), value: "null".to_owned() }
    }
}

/// Why a step waits for an operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperatorWait {
    /// The step asks for confirmation before its first attempt.
    Gate { prompt: String },
    /// An attempt was lost with its process and may have taken effect.
    Interrupted { reason: String },
}

/// Who approved a step's gate, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub by: String,
    pub at: Millis,
}

/// Why a step was skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SkipCause {
    /// `dr skip`.
    Operator,
    /// Its condition was false, or a step it needs was skipped.
    Condition,
}

/// Where a step stands. Each variant carries what that state has, nothing else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepState {
    Pending,
    /// An attempt runs, in process incarnation `epoch`, until `deadline`.
    Running { attempt: u32, epoch: u32, started_at: Millis, deadline: Option<Millis> },
    /// The step's probe runs: did a lost attempt take effect?
    Probing { attempt: u32, epoch: u32, started_at: Millis },
    /// The latest attempt failed; the next starts at `until` (durable backoff).
    BackingOff { until: Millis, error: String },
    /// Waits for `dr approve` or `dr skip`.
    AwaitingOperator(OperatorWait),
    Succeeded { at: Millis, output: StepOutput },
    /// Out of retries. A tolerated failure is final and the run goes on;
    /// otherwise the run pauses (`dr retry`, `dr approve`, `dr skip`).
    Failed { at: Millis, error: String, tolerated: bool },
    Skipped { at: Millis, reason: String, cause: SkipCause },
    /// Stopped because the run ended (cancelled, or failed elsewhere).
    Cancelled { at: Millis },
}

impl StepState {
    /// Succeeded, skipped or failed-and-tolerated: the step will not run again
    /// and the steps after it may be decided.
    pub fn is_settled(&self) -> bool {
        matches!(
            self,
            StepState::Succeeded { .. } | StepState::Skipped { .. } | StepState::Failed { tolerated: true, .. }
        )
    }

    /// An attempt or a probe is in flight.
    pub fn is_active(&self) -> bool {
        matches!(self, StepState::Running { .. } | StepState::Probing { .. })
    }

    /// Waits for an operator's decision (approve, skip, retry).
    pub fn needs_operator(&self) -> bool {
        matches!(self, StepState::AwaitingOperator(_) | StepState::Failed { tolerated: false, .. })
    }

    pub fn finished_at(&self) -> Option<Millis> {
        match self {
            StepState::Succeeded { at, .. }
            | StepState::Failed { at, .. }
            | StepState::Skipped { at, .. }
            | StepState::Cancelled { at } => Some(*at),
            _ => None,
        }
    }

    pub fn output(&self) -> Option<&StepOutput> {
        match self {
            StepState::Succeeded { output, .. } => Some(output),
            _ => None,
        }
    }

    /// The state's name as `dr status` shows it.
    pub fn as_str(&self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running { .. } => "running",
            StepState::Probing { .. } => "probing",
            StepState::BackingOff { .. } => "backing-off",
            StepState::AwaitingOperator(OperatorWait::Gate { .. }) => "gated",
            StepState::AwaitingOperator(OperatorWait::Interrupted { .. }) => "needs-operator",
            StepState::Succeeded { .. } => "succeeded",
            StepState::Failed { tolerated: true, .. } => "failed-tolerated",
            StepState::Failed { .. } => "failed",
            StepState::Skipped { .. } => "skipped",
            StepState::Cancelled { .. } => "cancelled",
        }
    }
}

/// One step of a run, as of the run's latest event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub id: StepId,
    pub state: StepState,
    /// Attempts started so far (the number of the latest one).
    pub attempts: u32,
    /// Failed attempts since the step last got a fresh retry budget.
    pub failures: u32,
    /// When the first attempt started.
    pub first_started_at: Option<Millis>,
    /// The gate's approval, once given.
    pub approval: Option<Approval>,
}

impl StepRecord {
    pub fn new(id: impl Into<StepId>) -> Self {
        StepRecord { id: id.into(), state: StepState::Pending, attempts: 0, failures: 0, first_started_at: None, approval: None }
    }
}

/// What a run is, fixed at its creation: the first event of its history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunHeader {
    pub id: RunId,
    pub workflow: String,
    /// Hash of the workflow definition the run started with.
    pub definition_hash: String,
    /// Per-step hashes of that definition, to say what changed.
    pub definition_steps: Vec<(StepId, String)>,
    /// Digest of the configuration (`dr.toml`) the definition was built from.
    pub config_digest: Option<String>,
    /// Where that configuration was read from, so `dr resume` finds it again.
    pub config_path: Option<String>,
    pub params: BTreeMap<String, String>,
    pub level: u8,
    pub target_secs: u64,
    pub incident_at: Millis,
    pub steps: Vec<StepId>,
}

/// The snapshot of a run: everything its events add up to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: RunId,
    pub workflow: String,
    pub definition_hash: String,
    pub definition_steps: Vec<(StepId, String)>,
    pub config_digest: Option<String>,
    pub config_path: Option<String>,
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
    /// Set once the main steps are over (or the run is cancelled): no main
    /// step starts any more; the cleanup steps run, then the run ends so.
    pub ending: Option<Ending>,
    /// `dr start --yes`: who approved every gate of the run in advance.
    pub gates_preapproved: Option<String>,
    pub steps: Vec<StepRecord>,
}

impl RunRecord {
    /// The snapshot right after the run-created event.
    pub fn new(header: &RunHeader, at: Millis) -> Self {
        RunRecord {
            id: header.id,
            workflow: header.workflow.clone(),
            definition_hash: header.definition_hash.clone(),
            definition_steps: header.definition_steps.clone(),
            config_digest: header.config_digest.clone(),
            config_path: header.config_path.clone(),
            params: header.params.clone(),
            level: header.level,
            target_secs: header.target_secs,
            status: RunStatus::Running,
            reason: None,
            incident_at: header.incident_at,
            started_at: at,
            finished_at: None,
            updated_at: at,
            next_seq: 0,
            epoch: 0,
            ending: None,
            gates_preapproved: None,
            steps: header.steps.iter().cloned().map(StepRecord::new).collect(),
        }
    }

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
            steps_done: u32::try_from(self.steps.iter().filter(|s| s.state.is_settled()).count()).unwrap_or(u32::MAX),
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

/// What a failed attempt leads to, decided when it failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AfterFailure {
    /// The next attempt starts at this time.
    RetryAt(Millis),
    /// Out of retries: the run pauses for an operator.
    Pause,
    /// Out of retries, and the step's failure is tolerated: the run goes on.
    Tolerate,
}

/// What happened to a run. The history is the list of these; the snapshot is
/// their fold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    RunCreated { header: Box<RunHeader> },
    /// `dr start --yes`: every gate of the run is approved in advance.
    GatesPreApproved { by: String },
    /// A process took the run up again (after a crash, `dr resume`, a restart).
    RunResumed { epoch: u32, by: String },
    /// The operator let the run continue under a changed workflow definition or configuration.
    DefinitionReplaced { definition_hash: String, definition_steps: Vec<(StepId, String)>, config_digest: Option<String> },
    StepStarted { step: StepId, attempt: u32, epoch: u32, deadline: Option<Millis> },
    StepSucceeded { step: StepId, attempt: u32, duration_ms: DurationMs, output: StepOutput },
    StepFailed { step: StepId, attempt: u32, error: String, then: AfterFailure },
    /// An attempt was lost with the process that ran it; the step runs again.
    StepInterrupted { step: StepId, attempt: u32 },
    /// The step's probe started: it tells whether a lost attempt took effect.
    StepProbing { step: StepId, attempt: u32, epoch: u32 },
    /// The probe's answer: `Some(output)` when the lost attempt took effect.
    StepProbed { step: StepId, attempt: u32, output: Option<StepOutput> },
    /// An interrupted attempt needs `dr approve` or `dr skip`.
    StepAwaitingOperator { step: StepId, reason: String },
    /// The step waits at its gate for confirmation before its first attempt.
    StepGated { step: StepId, prompt: String },
    /// The step's condition was false (or a step it needs was skipped).
    StepSkipped { step: StepId, reason: String },
    StepCancelled { step: StepId, attempt: u32 },
    OperatorApproved { step: StepId, by: String },
    OperatorSkipped { step: StepId, reason: String, by: String },
    RetryRequested { step: StepId, by: String },
    CancelRequested { reason: String, by: String },
    /// The process driving the run stopped on a signal; the run can be resumed.
    ProcessStopped { signal: String },
    /// The main steps are over: cleanup steps run, then the run ends so.
    RunEnding { ending: Ending },
    RunPaused { reason: String },
    RunSucceeded,
    RunFailed { reason: String },
    RunCancelled { reason: String },
    /// `dr report ID --set FIELD=VALUE`: a field of the incident report only
    /// an operator can fill (`cause`, `impact`, `lessons`). Accepted on any
    /// run, an ended one included; it changes nothing but the event count.
    /// Last of the variants: bincode numbers them, so stored histories still decode.
    ReportFieldSet { field: String, value: String, by: String },
}

impl Event {
    /// A short name for listings (`dr history`).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::RunCreated { .. } => "run-created",
            Event::GatesPreApproved { .. } => "gates-preapproved",
            Event::RunResumed { .. } => "run-resumed",
            Event::DefinitionReplaced { .. } => "definition-replaced",
            Event::StepStarted { .. } => "step-started",
            Event::StepSucceeded { .. } => "step-succeeded",
            Event::StepFailed { .. } => "step-failed",
            Event::StepInterrupted { .. } => "step-interrupted",
            Event::StepProbing { .. } => "step-probing",
            Event::StepProbed { .. } => "step-probed",
            Event::StepAwaitingOperator { .. } => "step-awaiting-operator",
            Event::StepGated { .. } => "step-gated",
            Event::StepSkipped { .. } => "step-skipped",
            Event::StepCancelled { .. } => "step-cancelled",
            Event::OperatorApproved { .. } => "operator-approved",
            Event::OperatorSkipped { .. } => "operator-skipped",
            Event::RetryRequested { .. } => "retry-requested",
            Event::CancelRequested { .. } => "cancel-requested",
            Event::ProcessStopped { .. } => "process-stopped",
            Event::RunEnding { .. } => "run-ending",
            Event::RunPaused { .. } => "run-paused",
            Event::RunSucceeded => "run-succeeded",
            Event::RunFailed { .. } => "run-failed",
            Event::RunCancelled { .. } => "run-cancelled",
            Event::ReportFieldSet { .. } => "report-field-set",
        }
    }

    /// The step this event is about, if any.
    pub fn step(&self) -> Option<&StepId> {
        match self {
            Event::StepStarted { step, .. }
            | Event::StepSucceeded { step, .. }
            | Event::StepFailed { step, .. }
            | Event::StepInterrupted { step, .. }
            | Event::StepProbing { step, .. }
            | Event::StepProbed { step, .. }
            | Event::StepAwaitingOperator { step, .. }
            | Event::StepGated { step, .. }
            | Event::StepSkipped { step, .. }
            | Event::StepCancelled { step, .. }
            | Event::OperatorApproved { step, .. }
            | Event::OperatorSkipped { step, .. }
            | Event::RetryRequested { step, .. } => Some(step),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_format_as_utc_dates() {
        assert_eq!(format_millis(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_millis(1_795_000_000_000), "2026-11-18 11:06 UTC");
        assert_eq!(format_millis(951_782_400_000), "2000-02-29 00:00 UTC");
    }

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
