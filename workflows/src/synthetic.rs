//! `synthetic`: a workflow of N steps that only wait, write a trace and fail
//! on request. For tests, the demo and benchmarks; it touches nothing else.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dr_orchestrator::{
    Action, ActionCtx, ActionError, ActionOutput, BoxFuture, CatalogError, ParamSpec, ResumeClass, RetryPolicy,
    StepDef, WorkflowDef, WorkflowInfo,
};

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
            ParamSpec { name: "trace", description: "file to which each action run appends `step-I attempt-A`", default: None },
            ParamSpec { name: "fail_at", description: "index I of a step that fails its first fail_times attempts", default: None },
            ParamSpec { name: "fail_times", description: "how many attempts of step fail_at fail", default: Some("1") },
            ParamSpec { name: "resume", description: "resume class of every step: idempotent, probe or confirm", default: Some("idempotent") },
            ParamSpec { name: "parallel", description: "if true, steps 2..N all depend only on step 1 and run at once", default: Some("false") },
            ParamSpec { name: "attempts", description: "attempts per step, the first included", default: Some("3") },
            ParamSpec { name: "backoff_ms", description: "first retry delay in ms (doubles each retry)", default: Some("100") },
        ],
    }
}

pub fn build(values: &BTreeMap<String, String>) -> Result<WorkflowDef, CatalogError> {
    let info = info();
    let p = Params::new(&info, values)?;
    let steps: usize = p.number("steps", 1..=10_000, "a whole number from 1 to 10000")?.unwrap_or(5);
    let step_ms: u64 = p.number("step_ms", 0..=86_400_000, "milliseconds, 0 to 86400000")?.unwrap_or(200);
    let level: u8 = p.number("level", 1..=4, "a level from 1 to 4")?.unwrap_or(1);
    let fail_at: Option<usize> = p.number("fail_at", 1..=steps, &format!("a step index from 1 to {steps}"))?;
    let fail_times: u32 = p.number("fail_times", 0..=1_000_000, "a whole number")?.unwrap_or(1);
    let resume: ResumeClass = p.parse("resume")?.unwrap_or(ResumeClass::Idempotent);
    let parallel = p.flag("parallel")?;
    let attempts: u32 = p.number("attempts", 1..=1000, "a whole number from 1 to 1000")?.unwrap_or(3);
    let backoff_ms: u64 = p.number("backoff_ms", 0..=3_600_000, "milliseconds, 0 to 3600000")?.unwrap_or(100);
    let trace = p.string("trace").filter(|t| !t.is_empty()).map(PathBuf::from);

    let steps = (1..=steps)
        .map(|i| {
            let depends_on = match (i, parallel) {
                (1, _) => vec![],
                (_, true) => vec!["step-1".to_owned()],
                (_, false) => vec![format!("step-{}", i - 1)],
            };
            StepDef {
                id: format!("step-{i}"),
                description: format!("synthetic step {i}"),
                action: Arc::new(SyntheticStep {
                    index: i,
                    step_ms,
                    trace: trace.clone(),
                    fail_times: if fail_at == Some(i) { fail_times } else { 0 },
                }),
                depends_on,
                retry: RetryPolicy {
                    max_attempts: attempts,
                    initial_backoff_ms: backoff_ms,
                    max_backoff_ms: backoff_ms.saturating_mul(16).max(1),
                    multiplier: 2,
                    jitter_percent: 10,
                },
                timeout_ms: step_ms.saturating_add(60_000),
                expected_ms: step_ms,
                resume,
                fatal: false,
            }
        })
        .collect();
    Ok(WorkflowDef { name: NAME.to_owned(), level, target_secs: 0, description: info.description.to_owned(), steps })
}

/// One synthetic step: append the trace line, wait, fail if told to.
#[derive(Debug)]
struct SyntheticStep {
    index: usize,
    step_ms: u64,
    trace: Option<PathBuf>,
    fail_times: u32,
}

impl SyntheticStep {
    fn line_prefix(&self) -> String {
        format!("step-{} ", self.index)
    }

    fn append_trace(&self, attempt: u32) -> Result<(), ActionError> {
        let Some(path) = &self.trace else { return Ok(()) };
        let line = format!("step-{} attempt-{attempt}\n", self.index);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| ActionError::permanent(format!("cannot open trace file {}: {e}", path.display())))?;
        file.write_all(line.as_bytes())
            .map_err(|e| ActionError::retryable(format!("cannot write trace file {}: {e}", path.display())))
    }
}

impl Action for SyntheticStep {
    fn kind(&self) -> &'static str {
        "synthetic.step"
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({
            "index": self.index,
            "step_ms": self.step_ms,
            "trace": self.trace,
            "fail_times": self.fail_times,
        })
    }

    fn run(&self, ctx: ActionCtx) -> BoxFuture<'_, Result<ActionOutput, ActionError>> {
        Box::pin(async move {
            self.append_trace(ctx.attempt)?;
            if self.step_ms > 0 {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(self.step_ms)) => {}
                    () = ctx.cancel.cancelled() => return Err(ActionError::retryable("stopped before the step finished")),
                }
            }
            if ctx.attempt <= self.fail_times {
                return Err(ActionError::retryable(format!(
                    "synthetic failure of step {} (attempt {} of the {} that fail)",
                    self.index, ctx.attempt, self.fail_times
                )));
            }
            Ok(ActionOutput::new(format!("step {} done in attempt {}", self.index, ctx.attempt)))
        })
    }

    fn probe(&self, _ctx: ActionCtx) -> BoxFuture<'_, Result<bool, ActionError>> {
        Box::pin(async move {
            let Some(path) = &self.trace else {
                return Err(ActionError::permanent("no trace file to probe (set --param trace=FILE)"));
            };
            match std::fs::read_to_string(path) {
                Ok(text) => Ok(text.lines().any(|l| l.starts_with(&self.line_prefix()))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(ActionError::retryable(format!("cannot read trace file {}: {e}", path.display()))),
            }
        })
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
        let err = build(&params(&[("stepz", "3")])).unwrap_err().to_string();
        assert!(err.contains("unknown parameter") && err.contains("steps"), "{err}");
        let err = crate::DrCatalog.build("nope", &BTreeMap::new()).unwrap_err().to_string();
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
        let step = SyntheticStep { index: 2, step_ms: 0, trace: Some(trace.clone()), fail_times: 1 };
        let ctx = |attempt| ActionCtx {
            run_id: dr_state_id(),
            workflow: NAME.into(),
            step: "step-2".into(),
            attempt,
            cancel: Default::default(),
            deadline: None,
        };
        assert!(!step.probe(ctx(1)).await.unwrap());
        assert!(step.run(ctx(1)).await.is_err());
        assert!(step.run(ctx(2)).await.is_ok());
        assert_eq!(std::fs::read_to_string(&trace).unwrap(), "step-2 attempt-1\nstep-2 attempt-2\n");
        assert!(step.probe(ctx(3)).await.unwrap());
    }

    fn dr_state_id() -> dr_orchestrator::RunId {
        dr_orchestrator::RunId::new_v7(0, 0)
    }
}
