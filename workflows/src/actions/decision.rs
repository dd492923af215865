//! `dr.decision`: a step that does nothing but record that an operator took a
//! decision — the gate in front of it is the point (accepting the loss of the
//! changes made after an old backup). Its output names the decision.
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
