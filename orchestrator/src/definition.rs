//! Workflow definitions: steps, their actions, dependencies, retry policy,
//! timeout, expected duration and resume class; the [`Action`] and
//! [`Catalog`] traits that `dr-workflows` implements; the definition hash a
//! run is pinned to.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use dr_state::{Millis, RunId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::retry::RetryPolicy;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What an action is told about the attempt it runs.
#[derive(Clone, Debug)]
pub struct ActionCtx {
    pub run_id: RunId,
    pub workflow: String,
    pub step: String,
    pub attempt: u32,
    /// Cancelled when the run is cancelled, the attempt times out or the
    /// process stops; the action must stop promptly and kill what it started.
    pub cancel: CancellationToken,
    /// When the attempt times out (ms since the epoch).
    pub deadline: Option<Millis>,
}

/// What an attempt produced: a short summary kept in the run's history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ActionOutput {
    pub summary: String,
}

impl ActionOutput {
    pub fn new(summary: impl Into<String>) -> Self {
        ActionOutput { summary: summary.into() }
    }
}

/// Why an attempt failed, and whether trying again may help.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ActionError {
    pub message: String,
    pub retryable: bool,
}

impl ActionError {
    pub fn retryable(message: impl Into<String>) -> Self {
        ActionError { message: message.into(), retryable: true }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        ActionError { message: message.into(), retryable: false }
    }
}

/// A side effect a step performs. Implemented in `dr-workflows`.
pub trait Action: Send + Sync + 'static {
    /// A stable name of the kind of action (`kube.rollout-restart`, ...).
    fn kind(&self) -> &'static str;
    /// The action's parameters, as they define what it does (hashed into the
    /// definition hash; never secrets).
    fn params(&self) -> serde_json::Value;
    /// Performs one attempt.
    fn run(&self, ctx: ActionCtx) -> BoxFuture<'_, Result<ActionOutput, ActionError>>;
    /// For [`ResumeClass::Probe`] steps: tells whether an attempt that was
    /// lost with its process already took effect. The default cannot tell,
    /// so the step runs again.
    fn probe(&self, _ctx: ActionCtx) -> BoxFuture<'_, Result<bool, ActionError>> {
        Box::pin(async { Ok(false) })
    }
}

/// How a step that was started but not finished is taken up after a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResumeClass {
    /// Safe to run again.
    Idempotent,
    /// Run the action's probe: if the step took effect it is done, else it runs again.
    Probe,
    /// Pause the run; an operator decides (`dr approve` runs it again, `dr skip` marks it done).
    Confirm,
}

impl ResumeClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ResumeClass::Idempotent => "idempotent",
            ResumeClass::Probe => "probe",
            ResumeClass::Confirm => "confirm",
        }
    }
}

impl std::str::FromStr for ResumeClass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "idempotent" => Ok(ResumeClass::Idempotent),
            "probe" => Ok(ResumeClass::Probe),
            "confirm" => Ok(ResumeClass::Confirm),
            _ => Err("one of idempotent, probe, confirm".to_owned()),
        }
    }
}

/// One step of a workflow.
#[derive(Clone)]
pub struct StepDef {
    pub id: String,
    pub description: String,
    pub action: Arc<dyn Action>,
    pub depends_on: Vec<String>,
    pub retry: RetryPolicy,
    pub timeout_ms: u64,
    /// Declared estimate, used for RTO projection until real runs are measured.
    pub expected_ms: u64,
    pub resume: ResumeClass,
    /// When true, running out of retries fails the run instead of pausing it.
    pub fatal: bool,
}

impl std::fmt::Debug for StepDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepDef")
            .field("id", &self.id)
            .field("action", &self.action.kind())
            .field("depends_on", &self.depends_on)
            .field("resume", &self.resume)
            .finish_non_exhaustive()
    }
}

/// A workflow: a graph of steps, listed so that every step comes after the
/// steps it depends on.
#[derive(Clone, Debug)]
pub struct WorkflowDef {
    pub name: String,
    pub level: u8,
    pub target_secs: u64,
    pub description: String,
    pub steps: Vec<StepDef>,
}

/// The pure view of a definition that the core works on (no actions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<PlanStep>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanStep {
    pub id: String,
    /// Indexes of the steps this one depends on (all smaller than its own).
    pub deps: Vec<usize>,
    pub retry: RetryPolicy,
    pub timeout_ms: u64,
    pub expected_ms: u64,
    pub resume: ResumeClass,
    pub fatal: bool,
}

#[derive(Serialize)]
struct HashedStep<'a> {
    id: &'a str,
    kind: &'a str,
    params: serde_json::Value,
    depends_on: &'a [String],
    retry: &'a RetryPolicy,
    timeout_ms: u64,
    resume: ResumeClass,
    fatal: bool,
}

impl WorkflowDef {
    /// Checks the graph: unique step ids, known dependencies, listed in order.
    pub fn validate(&self) -> Result<(), CatalogError> {
        let invalid = |detail: String| CatalogError::Invalid { workflow: self.name.clone(), detail };
        if self.steps.is_empty() {
            return Err(invalid("a workflow needs at least one step".into()));
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, step) in self.steps.iter().enumerate() {
            for dep in &step.depends_on {
                if !seen.contains_key(dep.as_str()) {
                    return Err(invalid(format!(
                        "step {} depends on {dep}, which is not an earlier step",
                        step.id
                    )));
                }
            }
            if seen.insert(&step.id, i).is_some() {
                return Err(invalid(format!("step id {} is used twice", step.id)));
            }
        }
        Ok(())
    }

    pub fn plan(&self) -> Plan {
        let index: HashMap<&str, usize> = self.steps.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
        Plan {
            steps: self
                .steps
                .iter()
                .map(|s| PlanStep {
                    id: s.id.clone(),
                    deps: s.depends_on.iter().filter_map(|d| index.get(d.as_str()).copied()).collect(),
                    retry: s.retry.clone(),
                    timeout_ms: s.timeout_ms,
                    expected_ms: s.expected_ms,
                    resume: s.resume,
                    fatal: s.fatal,
                })
                .collect(),
        }
    }

    /// Per-step hashes of what each step does.
    pub fn step_hashes(&self) -> Vec<(String, String)> {
        self.steps
            .iter()
            .map(|s| {
                let hashed = HashedStep {
                    id: &s.id,
                    kind: s.action.kind(),
                    params: s.action.params(),
                    depends_on: &s.depends_on,
                    retry: &s.retry,
                    timeout_ms: s.timeout_ms,
                    resume: s.resume,
                    fatal: s.fatal,
                };
                (s.id.clone(), sha256_hex(&serde_json::to_vec(&hashed).unwrap_or_default()))
            })
            .collect()
    }

    /// The hash of the whole definition: name, level, target and every step.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.name.as_bytes());
        h.update([0, self.level]);
        h.update(self.target_secs.to_be_bytes());
        for (id, step_hash) in self.step_hashes() {
            h.update(id.as_bytes());
            h.update([0]);
            h.update(step_hash.as_bytes());
        }
        hex(&h.finalize())[..16].to_owned()
    }
}

/// Says what changed between the step hashes a run started with and now.
pub fn describe_changes(old: &[(String, String)], new: &[(String, String)]) -> String {
    let old_map: BTreeMap<&str, &str> = old.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let new_map: BTreeMap<&str, &str> = new.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let mut changes = Vec::new();
    for (id, hash) in &old_map {
        match new_map.get(id) {
            None => changes.push(format!("step {id} removed")),
            Some(h) if h != hash => changes.push(format!("step {id} changed")),
            _ => {}
        }
    }
    for id in new_map.keys() {
        if !old_map.contains_key(id) {
            changes.push(format!("step {id} added"));
        }
    }
    if changes.is_empty() {
        "workflow level or target changed".to_owned()
    } else {
        changes.join(", ")
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A parameter a workflow accepts.
#[derive(Clone, Debug, Serialize)]
pub struct ParamSpec {
    pub name: &'static str,
    pub description: &'static str,
    /// None when the parameter is required.
    pub default: Option<&'static str>,
}

/// What `dr workflows` lists.
#[derive(Clone, Debug, Serialize)]
pub struct WorkflowInfo {
    pub name: &'static str,
    pub level: u8,
    pub description: &'static str,
    pub params: Vec<ParamSpec>,
}

/// The set of workflows `dr` knows.
pub trait Catalog: Send + Sync + 'static {
    fn workflows(&self) -> Vec<WorkflowInfo>;
    /// Builds the definition of a workflow for the given parameters.
    fn build(&self, name: &str, params: &BTreeMap<String, String>) -> Result<WorkflowDef, CatalogError>;
    /// Called when a process stops driving a run (it ended, paused or the
    /// process stops): release what the run's actions hold (connections).
    fn release(&self, _run: RunId) {}
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum CatalogError {
    #[error("unknown workflow {name:?}; known workflows: {}", known.join(", "))]
    UnknownWorkflow { name: String, known: Vec<String> },
    #[error("workflow {workflow}: parameter {param}={value:?} is invalid: expected {expected}")]
    BadParam { workflow: String, param: String, value: String, expected: String },
    #[error("workflow {workflow}: parameter {param} is required: {expected}")]
    MissingParam { workflow: String, param: String, expected: String },
    #[error("workflow {workflow}: unknown parameter {param:?}; it takes: {}", known.join(", "))]
    UnknownParam { workflow: String, param: String, known: Vec<String> },
    #[error("workflow {workflow} is invalid: {detail}")]
    Invalid { workflow: String, detail: String },
}
