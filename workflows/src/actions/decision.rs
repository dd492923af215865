//! `dr.decision`: a step that does nothing but record that an operator took a
//! decision — the gate in front of it is the point (accepting the loss of the
//! changes made after an old backup). Its output names the decision.
//!
//! `dr.record`: the outcome of earlier steps as one record (a drill's result).
//!
//! Refuses: any side effect.

use dr_orchestrator::{ActionCtx, ActionError, TypedAction};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// What was decided, in words.
    pub decision: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub decision: String,
}

impl TypedAction for Decision {
    const KIND: &'static str = "dr.decision";
    type Params = Self;
    type Output = DecisionRecord;

    fn params(&self) -> &Self {
        self
    }

    fn summary(&self, record: &DecisionRecord) -> String {
        format!("decided: {}", record.decision)
    }

    async fn run(&self, _ctx: &ActionCtx) -> Result<DecisionRecord, ActionError> {
        Ok(DecisionRecord { decision: self.decision.clone() })
    }
}

/// `dr.record`: the outcome of a set of earlier steps, as one record (a
/// drill's result): which passed, which did not (failed, tolerated, or
/// skipped). It reads only which dependencies handed it an output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// What is recorded (`monthly DR drill`).
    pub what: String,
    /// The steps whose outcome is recorded (all dependencies of this step).
    pub checks: Vec<dr_orchestrator::StepId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordOutput {
    pub what: String,
    /// When, ms since the epoch.
    pub at_ms: i64,
    pub passed: Vec<String>,
    pub problems: Vec<String>,
}

impl TypedAction for Record {
    const KIND: &'static str = "dr.record";
    type Params = Self;
    type Output = RecordOutput;

    fn params(&self) -> &Self {
        self
    }

    fn summary(&self, r: &RecordOutput) -> String {
        if r.problems.is_empty() {
            format!("{}: {} checks passed, no problem", r.what, r.passed.len())
        } else {
            format!("{}: {} checks passed; problems: {}", r.what, r.passed.len(), r.problems.join(", "))
        }
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<RecordOutput, ActionError> {
        let (passed, problems): (Vec<_>, Vec<_>) = self.checks.iter().partition(|c| ctx.inputs.contains_key(*c));
        Ok(RecordOutput {
            what: self.what.clone(),
            at_ms: ctx.clock.now_ms(),
            passed: passed.into_iter().map(|c| c.to_string()).collect(),
            problems: problems.into_iter().map(|c| c.to_string()).collect(),
        })
    }
}
