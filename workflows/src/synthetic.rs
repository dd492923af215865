//! `synthetic`: a workflow of N steps that only wait, write a trace and fail
//! on request. For tests, the demo and benchmarks; it touches nothing else.
//! Its parameters exercise every primitive of the workflow model from the
//! command line: step data (`pass_data`), gates (`gate_at`), tolerated
//! failures (`tolerate_at`) and cleanup steps (`cleanup`).

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use dr_orchestrator::{
    ActionCtx, ActionError, CatalogError, ParamSpec, ResumeClass, RetryPolicy, StepHandle, TypedAction, WorkflowBuilder,
    WorkflowDef, WorkflowInfo,
};
use serde::{Deserialize, Serialize};

use crate::params::Params;

pub const NAME: &str = "synthetic";

pub fn info() -> WorkflowInfo {
    WorkflowInfo {
        name: NAME,
        level: 1,
        description: "N steps that wait step_ms each; a test and demo workflow that touches nothing",
        params: vec![
            ParamSpec { name: "steps", description: "number of steps, named step-1 … step-N (1–10000)", default: Some("5") },
            ParamSpec { name: "step_ms", description: "how long each step's action takes, in ms", default: Some("200") },
            ParamSpec { name: "level", description: "failure level 1–4; sets the RTO target (15 min, 1 h, 2 h, 4 h)", default: Some("1") },
            ParamSpec { name: "trace", description: "file to which each action run appends `step-I attempt-A` (`cleanup attempt-A`)", default: None },
            ParamSpec { name: "fail_at", description: "index I of a step that fails its first fail_times attempts; several as I,J,…", default: None },
            ParamSpec { name: "fail_times", description: "how many attempts of step fail_at fail", default: Some("1") },
            ParamSpec { name: "resume", description: "resume class of every step: idempotent, probe or confirm", default: Some("idempotent") },
            ParamSpec { name: "parallel", description: "if true, steps 2..N all depend only on step 1 and run at once", default: Some("false") },
            ParamSpec { name: "attempts", description: "attempts per step, the first included", default: Some("3") },
            ParamSpec { name: "backoff_ms", description: "first retry delay in ms (doubles each retry)", default: Some("100") },
            ParamSpec { name: "pass_data", description: "if true, step 1 outputs a fresh random token that every later step receives from its dependency and writes to the trace (`step-I attempt-A token=T`)", default: Some("false") },
            ParamSpec { name: "gate_at", description: "index I of a step that waits for confirmation (dr approve, or dr start --yes) before its first attempt", default: None },
            ParamSpec { name: "tolerate_at", description: "index I of a step whose final failure is tolerated: the run goes on", default: None },
            ParamSpec { name: "cleanup", description: "if true, adds a step `cleanup` that runs when the run ends, however it ends", default: Some("false") },
            ParamSpec { name: "command", description: "a shell command (sh -c) run by an extra last step `command` (command.run: its own process group, stopped if a killed dr left it running)", default: None },
        ],
    }
}

pub fn build(values: &BTreeMap<String, String>) -> Result<WorkflowDef, CatalogError> {
    let info = info();
    let p = Params::new(&info, values)?;
    let steps: usize = p.number("steps", 1..=10_000, "a whole number from 1 to 10000")?.unwrap_or(5);
    let step_ms: u64 = p.number("step_ms", 0..=86_400_000, "milliseconds, 0 to 86400000")?.unwrap_or(200);
    let level: u8 = p.number("level", 1..=4, "a level from 1 to 4")?.unwrap_or(1);
    let index_expected = format!("a step index from 1 to {steps}");
    let fail_at = p.indexes("fail_at", 1..=steps, &format!("{index_expected} (several as I,J)"))?;
    let fail_times: u32 = p.number("fail_times", 0..=1_000_000, "a whole number")?.unwrap_or(1);
    let resume: ResumeClass = p.parse("resume")?.unwrap_or(ResumeClass::Idempotent);
    let parallel = p.flag("parallel")?;
    let attempts: u32 = p.number("attempts", 1..=1000, "a whole number from 1 to 1000")?.unwrap_or(3);
    let backoff_ms: u64 = p.number("backoff_ms", 0..=3_600_000, "milliseconds, 0 to 3600000")?.unwrap_or(100);
    let trace = p.string("trace").filter(|t| !t.is_empty()).map(PathBuf::from);
    let pass_data = p.flag("pass_data")?;
    let gate_at: Option<usize> = p.number("gate_at", 1..=steps, &index_expected)?;
    let tolerate_at: Option<usize> = p.number("tolerate_at", 1..=steps, &index_expected)?;
    let cleanup = p.flag("cleanup")?;
    let command = p.string("command").filter(|c| !c.trim().is_empty());

    let retry = RetryPolicy {
        max_attempts: attempts,
        initial_backoff_ms: backoff_ms,
        max_backoff_ms: backoff_ms.saturating_mul(16).max(1),
        multiplier: 2,
        jitter_percent: 10,
    };
    let mut wf = WorkflowBuilder::new(NAME, level, info.description);
    let mut handles: Vec<StepHandle<SyntheticOutput>> = Vec::with_capacity(steps);
    for i in 1..=steps {
        let dependency = match (i, parallel) {
            (1, _) => None,
            (_, true) => handles.first().cloned(),
            (_, false) => handles.last().cloned(),
        };
        let action = SyntheticStep {
            params: SyntheticParams {
                label: format!("step-{i}"),
                step_ms,
                trace: trace.clone(),
                fail_times: if fail_at.contains(&i) { fail_times } else { 0 },
                pass_data,
            },
            input: dependency.clone().filter(|_| pass_data),
        };
        let id = format!("step-{i}");
        let mut step = wf
            .step(&id, &format!("synthetic step {i}"), action)
            .retry(retry.clone())
            .timeout_ms(step_ms.saturating_add(60_000))
            .expected_ms(step_ms)
            .resume(resume);
        if let Some(dep) = &dependency {
            step = step.after(dep);
        }
        if gate_at == Some(i) {
            step = match &dependency {
                Some(dep) => step.gate(&format!("synthetic step {i}: go ahead? ({} finished in attempt {{{}:/attempt}})", dep.id(), dep.id())),
                None => step.gate(&format!("synthetic step {i}: go ahead?")),
            };
        }
        if tolerate_at == Some(i) {
            step = step.tolerate_failure();
        }
        handles.push(step.add());
    }
    if let Some(command) = command {
        let action = crate::actions::command::CommandAction::new(crate::actions::command::CommandParams::new("/bin/sh").args(["-c".to_owned(), command.to_string()]));
        let mut step = wf.step("command", "synthetic command: sh -c COMMAND", action).retry(retry.clone()).expected_ms(step_ms).resume(resume);
        if let Some(last) = handles.last() {
            step = step.after(last);
        }
        step.add();
    }
    if cleanup {
        let action = SyntheticStep {
            params: SyntheticParams { label: "cleanup".into(), step_ms, trace, fail_times: 0, pass_data: false },
            input: None,
        };
        wf.step("cleanup", "synthetic cleanup: runs when the run ends", action)
            .retry(retry)
            .timeout_ms(step_ms.saturating_add(60_000))
            .expected_ms(step_ms)
            .resume(resume)
            .cleanup()
            .add();
    }
    Ok(wf.build())
}

/// What defines a synthetic step (hashed into the definition).
#[derive(Clone, Debug, Serialize)]
pub struct SyntheticParams {
    /// `step-I` or `cleanup`: the trace line's first word.
    label: String,
    step_ms: u64,
    trace: Option<PathBuf>,
    fail_times: u32,
    pass_data: bool,
}

/// What a synthetic step produces: which attempt did it, and the token it
/// received (or, for step 1, made).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyntheticOutput {
    pub label: String,
    pub attempt: u32,
    pub token: Option<String>,
}

/// One synthetic step: append the trace line, wait, fail if told to.
#[derive(Debug)]
struct SyntheticStep {
    params: SyntheticParams,
    /// With `pass_data`: the step whose output (its token) this one receives.
    input: Option<StepHandle<SyntheticOutput>>,
}

impl SyntheticStep {
    fn line_prefix(&self) -> String {
        format!("{} ", self.params.label)
    }

    /// The token this attempt carries: the dependency's, or a fresh one for the first step.
    fn token(&self, ctx: &ActionCtx) -> Result<Option<String>, ActionError> {
        if !self.params.pass_data {
            return Ok(None);
        }
        match &self.input {
            Some(from) => Ok(ctx.input(from)?.token),
            None => Ok(Some(fresh_token(ctx.clock.now_ms()))),
        }
    }

    fn append_trace(&self, attempt: u32, token: Option<&str>) -> Result<(), ActionError> {
        let Some(path) = &self.params.trace else { return Ok(()) };
        let line = match token {
            Some(t) => format!("{} attempt-{attempt} token={t}\n", self.params.label),
            None => format!("{} attempt-{attempt}\n", self.params.label),
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| ActionError::permanent(format!("cannot open trace file {}: {e}", path.display())))?;
        file.write_all(line.as_bytes())
            .map_err(|e| ActionError::retryable(format!("cannot write trace file {}: {e}", path.display())))
    }
}

/// 64 random bits as hex (the standard library's per-process random hash keys).
fn fresh_token(salt: i64) -> String {
    format!("{:016x}", std::collections::hash_map::RandomState::new().hash_one(salt))
}

impl TypedAction for SyntheticStep {
    const KIND: &'static str = "synthetic.step";
    type Params = SyntheticParams;
    type Output = SyntheticOutput;

    fn params(&self) -> &SyntheticParams {
        &self.params
    }

    fn summary(&self, output: &SyntheticOutput) -> String {
        match &output.token {
            Some(t) => format!("{} done in attempt {} (token {t})", output.label, output.attempt),
            None => format!("{} done in attempt {}", output.label, output.attempt),
        }
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<SyntheticOutput, ActionError> {
        let token = self.token(ctx)?;
        self.append_trace(ctx.attempt, token.as_deref())?;
        if self.params.step_ms > 0 {
            ctx.guard(&format!("synthetic {}", self.params.label), async {
                tokio::time::sleep(Duration::from_millis(self.params.step_ms)).await;
                Ok(())
            })
            .await?;
        }
        if ctx.attempt <= self.params.fail_times {
            return Err(ActionError::retryable(format!(
                "synthetic failure of {} (attempt {} of the {} that fail)",
                self.params.label, ctx.attempt, self.params.fail_times
            )));
        }
        Ok(SyntheticOutput { label: self.params.label.clone(), attempt: ctx.attempt, token })
    }

    /// Took effect when the trace has the step's line; its output is read back from that line.
    async fn probe(&self, ctx: &ActionCtx) -> Result<Option<SyntheticOutput>, ActionError> {
        let Some(path) = &self.params.trace else {
            return Err(ActionError::permanent("no trace file to probe (set --param trace=FILE)"));
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ActionError::retryable(format!("cannot read trace file {}: {e}", path.display()))),
        };
        let prefix = self.line_prefix();
        let Some(line) = text.lines().rfind(|l| l.starts_with(&prefix)) else { return Ok(None) };
        let attempt = line.split_whitespace().nth(1).and_then(|a| a.strip_prefix("attempt-")).and_then(|a| a.parse().ok());
        let token = line.split_whitespace().find_map(|w| w.strip_prefix("token=")).map(str::to_owned);
        let token = match (&self.input, token) {
            (Some(from), _) if self.params.pass_data => ctx.input(from)?.token,
            (_, token) => token,
        };
        Ok(Some(SyntheticOutput { label: self.params.label.clone(), attempt: attempt.unwrap_or(ctx.attempt), token }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dr_orchestrator::Catalog;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn builds_a_chain_or_a_fan_out() {
        let def = build(&params(&[("steps", "4")])).unwrap();
        assert_eq!(def.steps.len(), 4);
        assert_eq!(def.steps[3].depends_on, vec!["step-3"]);
        def.validate().unwrap();
        let def = build(&params(&[("steps", "4"), ("parallel", "true")])).unwrap();
        assert_eq!(def.steps[3].depends_on, vec!["step-1"]);
    }

    #[test]
    fn bad_parameters_say_which_and_what_is_expected() {
        let err = build(&params(&[("steps", "zero")])).unwrap_err().to_string();
        assert!(err.contains("steps") && err.contains("1 to 10000"), "{err}");
        let err = build(&params(&[("level", "7")])).unwrap_err().to_string();
        assert!(err.contains("level") && err.contains("1 to 4"), "{err}");
        let err = build(&params(&[("resume", "maybe")])).unwrap_err().to_string();
        assert!(err.contains("idempotent, probe, confirm"), "{err}");
        let err = build(&params(&[("steps", "3"), ("fail_at", "9")])).unwrap_err().to_string();
        assert!(err.contains("1 to 3"), "{err}");
        let err = build(&params(&[("steps", "3"), ("fail_at", "1,x")])).unwrap_err().to_string();
        assert!(err.contains("fail_at") && err.contains("I,J"), "{err}");
        let two = build(&params(&[("steps", "3"), ("fail_at", "1,3")])).unwrap();
        assert_ne!(two.hash(), build(&params(&[("steps", "3"), ("fail_at", "1")])).unwrap().hash());
        let err = build(&params(&[("stepz", "3")])).unwrap_err().to_string();
        assert!(err.contains("unknown parameter") && err.contains("steps"), "{err}");
        let err = crate::DrCatalog::new().build("nope", &BTreeMap::new()).unwrap_err().to_string();
        assert!(err.contains("synthetic"), "{err}");
    }

    #[test]
    fn the_definition_hash_follows_the_parameters() {
        let a = build(&params(&[("steps", "3")])).unwrap().hash();
        let b = build(&params(&[("steps", "3")])).unwrap().hash();
        let c = build(&params(&[("steps", "3"), ("step_ms", "5")])).unwrap().hash();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[tokio::test]
    async fn the_action_traces_fails_on_request_and_the_probe_finds_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let trace = dir.path().join("trace");
        let params = SyntheticParams { label: "step-2".into(), step_ms: 0, trace: Some(trace.clone()), fail_times: 1, pass_data: false };
        let step = SyntheticStep { params, input: None };
        let ctx = |attempt| {
            let mut ctx = ActionCtx::detached("step-2", std::sync::Arc::new(dr_orchestrator::SystemClock));
            ctx.attempt = attempt;
            ctx
        };
        assert_eq!(step.probe(&ctx(1)).await.unwrap(), None);
        assert!(step.run(&ctx(1)).await.is_err());
        assert!(step.run(&ctx(2)).await.is_ok());
        assert_eq!(std::fs::read_to_string(&trace).unwrap(), "step-2 attempt-1\nstep-2 attempt-2\n");
        assert_eq!(step.probe(&ctx(3)).await.unwrap().map(|o| o.attempt), Some(2));
    }

    #[test]
    fn the_model_parameters_build_gates_tolerated_steps_data_and_cleanup() {
        let def = build(&params(&[("steps", "3"), ("pass_data", "true"), ("gate_at", "2"), ("tolerate_at", "3"), ("cleanup", "true")])).unwrap();
        def.validate().unwrap();
        assert_eq!(def.steps.len(), 4);
        assert!(def.steps[1].gate.as_deref().unwrap().contains("{step-1:/attempt}"));
        assert!(def.steps[2].tolerate_failure);
        assert!(def.steps[3].cleanup && def.steps[3].id == "cleanup");
        let plain = build(&params(&[("steps", "3")])).unwrap();
        assert_ne!(def.hash(), plain.hash());
        let err = build(&params(&[("steps", "3"), ("gate_at", "4")])).unwrap_err().to_string();
        assert!(err.contains("gate_at") && err.contains("1 to 3"), "{err}");
    }
}
