//! Workflow definitions: steps with their action, dependencies, retry
//! policy, timeout, expected duration, resume class, condition, gate,
//! tolerated failure and cleanup flag; [`WorkflowBuilder`], which wires steps
//! through typed [`StepHandle`]s; the [`Catalog`] trait that `dr-workflows`
//! implements; the definition hash a run is pinned to.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use dr_state::{RunId, StepId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::action::{Action, StepHandle, Typed, TypedAction};
use crate::condition::{prompt_steps, Condition};
use crate::retry::RetryPolicy;

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
    pub id: StepId,
    pub description: String,
    pub action: Arc<dyn Action>,
    pub depends_on: Vec<StepId>,
    pub retry: RetryPolicy,
    pub timeout_ms: u64,
    /// Declared estimate, used for RTO projection until real runs are measured.
    pub expected_ms: u64,
    pub resume: ResumeClass,
    /// When true, running out of retries fails the run instead of pausing it.
    pub fatal: bool,
    /// When the step runs; `None`: when no step it depends on was skipped.
    pub condition: Option<Condition>,
    /// A confirmation asked before the first attempt: a prompt template whose
    /// `{step:/pointer}` placeholders are filled from dependencies' outputs.
    pub gate: Option<String>,
    /// The gate asks even when the run's gates were approved in advance
    /// (`dr start --yes`): for a loss the operator must accept knowingly.
    pub gate_always: bool,
    /// Running out of retries is recorded and the run goes on.
    pub tolerate_failure: bool,
    /// Runs when the run ends, however it ends (after its main steps).
    pub cleanup: bool,
    /// Dependencies that only order this step: it runs after them whatever
    /// they came to (succeeded, failed-tolerated, or skipped by a condition);
    /// their skip does not skip it. They are also in `depends_on`.
    pub ordering_only: Vec<StepId>,
}

impl StepDef {
    /// A step with the engine's defaults: no dependencies, 3 attempts with
    /// exponential backoff from 1 s, a 10-minute timeout, idempotent.
    pub fn new(id: impl Into<StepId>, description: impl Into<String>, action: Arc<dyn Action>) -> Self {
        StepDef {
            id: id.into(),
            description: description.into(),
            action,
            depends_on: Vec::new(),
            retry: RetryPolicy::default(),
            timeout_ms: 10 * 60 * 1000,
            expected_ms: 1000,
            resume: ResumeClass::Idempotent,
            fatal: false,
            condition: None,
            gate: None,
            gate_always: false,
            tolerate_failure: false,
            cleanup: false,
            ordering_only: Vec::new(),
        }
    }
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
    /// Digest of the configuration the definition was built from (pinned to
    /// the run beside the definition hash); `None` when it reads none.
    pub config_digest: Option<String>,
    /// Where that configuration was read from (recorded with the run).
    pub config_path: Option<String>,
}

/// Builds a [`WorkflowDef`] step by step. Each step added returns a
/// [`StepHandle`] typed by its action's output: later steps name it to depend
/// on it, read its output, branch on it or show it in a gate.
#[derive(Debug)]
pub struct WorkflowBuilder {
    def: WorkflowDef,
}

impl WorkflowBuilder {
    pub fn new(name: impl Into<String>, level: u8, description: impl Into<String>) -> Self {
        WorkflowBuilder {
            def: WorkflowDef {
                name: name.into(),
                level,
                target_secs: 0,
                description: description.into(),
                steps: Vec::new(),
                config_digest: None,
                config_path: None,
            },
        }
    }

    /// The RTO target (default: the level's).
    pub fn target_secs(mut self, secs: u64) -> Self {
        self.def.target_secs = secs;
        self
    }

    pub fn config_digest(mut self, digest: Option<String>) -> Self {
        self.def.config_digest = digest;
        self
    }

    /// A step running a typed action; its handle carries the action's output type.
    pub fn step<A: TypedAction>(&mut self, id: &str, description: &str, action: A) -> StepBuilder<'_, A::Output> {
        self.step_dyn(id, description, Arc::new(Typed(action)))
    }

    /// A step running any engine action; its output is read as JSON.
    pub fn step_dyn<T>(&mut self, id: &str, description: &str, action: Arc<dyn Action>) -> StepBuilder<'_, T> {
        StepBuilder { builder: self, def: StepDef::new(id, description, action), _output: std::marker::PhantomData }
    }

    pub fn build(self) -> WorkflowDef {
        self.def
    }
}

/// One step being added to a [`WorkflowBuilder`]; [`StepBuilder::add`] adds it.
#[must_use = "a step is only added by .add()"]
pub struct StepBuilder<'a, T> {
    builder: &'a mut WorkflowBuilder,
    def: StepDef,
    _output: std::marker::PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for StepBuilder<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.def.fmt(f)
    }
}

impl<'a, T> StepBuilder<'a, T> {
    /// Runs after `step` (and may read its output); skipped when `step` was
    /// skipped by its condition (unless this step has a condition of its own).
    pub fn after<U>(mut self, step: &StepHandle<U>) -> Self {
        if !self.def.depends_on.contains(&step.id) {
            self.def.depends_on.push(step.id.clone());
        }
        self
    }
    /// Runs after every step named (for ordering only when their outputs are
    /// not read: a barrier after parallel steps of different output types).
    pub fn after_each<'h>(mut self, steps: impl IntoIterator<Item = &'h StepId>) -> Self {
        for id in steps {
            if !self.def.depends_on.contains(id) {
                self.def.depends_on.push(id.clone());
            }
        }
        self
    }
    /// Runs after `step` whatever it came to — succeeded, failed (tolerated)
    /// or skipped — and may read its output when it succeeded: for a step
    /// that uses an optional earlier result (a live snapshot, else a backup).
    pub fn after_settled<U>(mut self, step: &StepHandle<U>) -> Self {
        self = self.after(step);
        if !self.def.ordering_only.contains(&step.id) {
            self.def.ordering_only.push(step.id.clone());
        }
        self
    }
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.def.retry = retry;
        self
    }
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.def.retry.max_attempts = attempts;
        self
    }
    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.def.timeout_ms = ms;
        self
    }
    pub fn expected_ms(mut self, ms: u64) -> Self {
        self.def.expected_ms = ms;
        self
    }
    pub fn resume(mut self, resume: ResumeClass) -> Self {
        self.def.resume = resume;
        self
    }
    pub fn fatal(mut self) -> Self {
        self.def.fatal = true;
        self
    }
    /// Runs only when `condition` holds (every step it names must be a dependency).
    pub fn when(mut self, condition: Condition) -> Self {
        self.def.condition = Some(condition);
        self
    }
    /// Asks for confirmation before the first attempt, showing `prompt`
    /// (`{step:/pointer}` placeholders read dependencies' outputs).
    pub fn gate(mut self, prompt: &str) -> Self {
        self.def.gate = Some(prompt.to_owned());
        self
    }
    /// Like [`StepBuilder::gate`], but `dr start --yes` does not approve it:
    /// an operator must, with `dr approve`.
    pub fn gate_always(mut self, prompt: &str) -> Self {
        self.def.gate = Some(prompt.to_owned());
        self.def.gate_always = true;
        self
    }
    /// Its final failure is recorded and the run goes on.
    pub fn tolerate_failure(mut self) -> Self {
        self.def.tolerate_failure = true;
        self
    }
    /// Runs when the run ends, however it ends.
    pub fn cleanup(mut self) -> Self {
        self.def.cleanup = true;
        self
    }
    /// Adds the step; its handle names it to later steps.
    pub fn add(self) -> StepHandle<T> {
        let id = self.def.id.clone();
        self.builder.def.steps.push(self.def);
        StepHandle::new(id)
    }
}

/// The pure view of a definition that the core works on (no actions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<PlanStep>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanStep {
    pub id: StepId,
    /// Indexes of the steps this one depends on (all smaller than its own).
    pub deps: Vec<usize>,
    pub retry: RetryPolicy,
    pub timeout_ms: u64,
    pub expected_ms: u64,
    pub resume: ResumeClass,
    pub fatal: bool,
    pub condition: Option<Condition>,
    pub gate: Option<String>,
    pub gate_always: bool,
    pub tolerate_failure: bool,
    pub cleanup: bool,
    /// Indexes of dependencies whose skip does not skip this step.
    pub ordering_only: Vec<usize>,
}

impl PlanStep {
    /// A plain step (tests): defaults as [`StepDef::new`].
    pub fn new(id: &str, deps: Vec<usize>) -> Self {
        PlanStep {
            id: StepId::from(id),
            deps,
            retry: RetryPolicy::default(),
            timeout_ms: 0,
            expected_ms: 0,
            resume: ResumeClass::Idempotent,
            fatal: false,
            condition: None,
            gate: None,
            gate_always: false,
            tolerate_failure: false,
            cleanup: false,
            ordering_only: Vec::new(),
        }
    }
}

#[derive(Serialize)]
struct HashedStep<'a> {
    id: &'a StepId,
    kind: &'a str,
    params: serde_json::Value,
    depends_on: &'a [StepId],
    retry: &'a RetryPolicy,
    timeout_ms: u64,
    resume: ResumeClass,
    fatal: bool,
    condition: &'a Option<Condition>,
    gate: &'a Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    gate_always: bool,
    tolerate_failure: bool,
    cleanup: bool,
    #[serde(skip_serializing_if = "<[StepId]>::is_empty")]
    ordering_only: &'a [StepId],
}

impl WorkflowDef {
    /// Checks the graph: unique step ids, known dependencies listed before
    /// their dependants, conditions and gate prompts that read only
    /// dependencies, cleanup steps that depend only on cleanup steps.
    pub fn validate(&self) -> Result<(), CatalogError> {
        let invalid = |detail: String| CatalogError::Invalid { workflow: self.name.clone(), detail };
        if self.steps.is_empty() {
            return Err(invalid("a workflow needs at least one step".into()));
        }
        let mut seen: HashMap<&StepId, &StepDef> = HashMap::new();
        for step in &self.steps {
            for dep in &step.depends_on {
                let Some(before) = seen.get(dep) else {
                    return Err(invalid(format!("step {} depends on {dep}, which is not an earlier step", step.id)));
                };
                if before.cleanup && !step.cleanup {
                    return Err(invalid(format!("step {} depends on cleanup step {dep}; only cleanup steps may", step.id)));
                }
                if step.cleanup && !before.cleanup {
                    return Err(invalid(format!(
                        "cleanup step {} depends on {dep}, a main step; cleanup steps run however the main steps ended, so they depend only on cleanup steps",
                        step.id
                    )));
                }
            }
            let reads = step.condition.iter().flat_map(Condition::steps).cloned().chain(step.gate.iter().flat_map(|g| prompt_steps(g)));
            for read in reads {
                if !step.depends_on.contains(&read) {
                    return Err(invalid(format!(
                        "step {} reads step {read} in its condition or gate, but does not depend on it",
                        step.id
                    )));
                }
            }
            if step.retry.max_attempts == 0 {
                return Err(invalid(format!("step {} has no attempts", step.id)));
            }
            if seen.insert(&step.id, step).is_some() {
                return Err(invalid(format!("step id {} is used twice", step.id)));
            }
        }
        if self.steps.iter().all(|s| s.cleanup) {
            return Err(invalid("a workflow needs at least one step that is not a cleanup step".into()));
        }
        Ok(())
    }

    pub fn plan(&self) -> Plan {
        let index: HashMap<&StepId, usize> = self.steps.iter().enumerate().map(|(i, s)| (&s.id, i)).collect();
        Plan {
            steps: self
                .steps
                .iter()
                .map(|s| PlanStep {
                    id: s.id.clone(),
                    deps: s.depends_on.iter().filter_map(|d| index.get(d).copied()).collect(),
                    retry: s.retry.clone(),
                    timeout_ms: s.timeout_ms,
                    expected_ms: s.expected_ms,
                    resume: s.resume,
                    fatal: s.fatal,
                    condition: s.condition.clone(),
                    gate: s.gate.clone(),
                    gate_always: s.gate_always,
                    tolerate_failure: s.tolerate_failure,
                    cleanup: s.cleanup,
                    ordering_only: s.ordering_only.iter().filter_map(|d| index.get(d).copied()).collect(),
                })
                .collect(),
        }
    }

    /// Per-step hashes of what each step does.
    pub fn step_hashes(&self) -> Vec<(StepId, String)> {
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
                    condition: &s.condition,
                    gate: &s.gate,
                    gate_always: s.gate_always,
                    tolerate_failure: s.tolerate_failure,
                    cleanup: s.cleanup,
                    ordering_only: &s.ordering_only,
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
            h.update(id.as_str().as_bytes());
            h.update([0]);
            h.update(step_hash.as_bytes());
        }
        hex(&h.finalize())[..16].to_owned()
    }
}

/// Says what changed between the step hashes a run started with and now.
pub fn describe_changes(old: &[(StepId, String)], new: &[(StepId, String)]) -> String {
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
    /// Builds the definition of an existing run, whose configuration was read
    /// from `recorded_config` when it started (used unless the operator names
    /// another). The default ignores it.
    fn build_for_run(
        &self,
        name: &str,
        params: &BTreeMap<String, String>,
        _recorded_config: Option<&str>,
    ) -> Result<WorkflowDef, CatalogError> {
        self.build(name, params)
    }
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
    #[error("workflow {workflow}: unknown parameter {param:?}{}; it takes: {}", did_you_mean(param, known), known.join(", "))]
    UnknownParam { workflow: String, param: String, known: Vec<String> },
    #[error("workflow {workflow} is invalid: {detail}")]
    Invalid { workflow: String, detail: String },
    /// The workflow reads the configuration (`dr.toml`), which is missing or wrong.
    #[error("workflow {workflow} needs the configuration: {detail}")]
    Config { workflow: String, detail: String },
}

/// " (did you mean step_ms?)" for a near miss (a dash for an underscore, the
/// case, or up to two letters off), else nothing.
pub fn did_you_mean(typed: &str, known: &[String]) -> String {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let cost = usize::from(ca != *cb);
                let next = (row[j + 1] + 1).min(row[j] + 1).min(prev + cost);
                prev = row[j + 1];
                row[j + 1] = next;
            }
        }
        row[b.len()]
    }
    let normal = typed.to_ascii_lowercase().replace('-', "_");
    known
        .iter()
        .map(|k| (distance(&normal, k), k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| format!(" (did you mean {k}?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod did_you_mean_tests {
    use super::did_you_mean;

    #[test]
    fn near_misses_are_named_and_far_ones_are_not() {
        let known: Vec<String> = ["steps", "step_ms", "fail_at"].iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(did_you_mean("step-ms", &known), " (did you mean step_ms?)");
        assert_eq!(did_you_mean("STEP_MS", &known), " (did you mean step_ms?)");
        assert_eq!(did_you_mean("fail_a", &known), " (did you mean fail_at?)");
        assert_eq!(did_you_mean("namespace", &known), "");
    }
}
