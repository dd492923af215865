//! What a step does: the [`Action`] trait the engine runs, the typed
//! [`TypedAction`] every concrete action implements (kind, typed params, typed
//! output, run, probe) from which `Action` is derived by [`Typed`], and the
//! [`ActionCtx`] an attempt gets: its run and step, the recorded outputs of the
//! steps it depends on, its deadline and cancellation, the injected clock.
//!
//! Owns: the one shape of an action — the span naming, the output bound, the
//! deadline/cancel race ([`ActionCtx::guard`]) — so actions hold none of it.
//! Refuses: any concrete action (those live in `dr-workflows`).

use std::collections::BTreeMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use dr_state::{Millis, RunId, StepId, StepOutput};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::clock::Clock;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The largest output value a step may record (JSON text), so that a
/// snapshot stays small enough to write at every transition.
pub const MAX_OUTPUT_BYTES: usize = 256 * 1024;

/// What an action is told about the attempt it runs.
#[derive(Clone)]
pub struct ActionCtx {
    pub run_id: RunId,
    pub workflow: String,
    pub step: StepId,
    pub attempt: u32,
    /// Cancelled when the run is cancelled, the attempt times out or the
    /// process stops; the action must stop promptly and kill what it started.
    pub cancel: CancellationToken,
    /// When the attempt times out (ms since the epoch).
    pub deadline: Option<Millis>,
    /// The recorded outputs of the step's dependencies that succeeded, read
    /// from the run's history: after a crash and resume they are exactly what
    /// the first process saw.
    pub inputs: Arc<BTreeMap<StepId, StepOutput>>,
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for ActionCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActionCtx")
            .field("run_id", &self.run_id)
            .field("step", &self.step)
            .field("attempt", &self.attempt)
            .field("deadline", &self.deadline)
            .field("inputs", &self.inputs.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl ActionCtx {
    /// A context for calling an action outside the engine (tests, `dr assess`,
    /// `dr config check`): no inputs, no deadline, the given clock.
    pub fn detached(step: &str, clock: Arc<dyn Clock>) -> Self {
        ActionCtx {
            run_id: RunId::new_v7(clock.now_ms(), 0),
            workflow: String::new(),
            step: StepId::from(step),
            attempt: 1,
            cancel: CancellationToken::new(),
            deadline: None,
            inputs: Arc::new(BTreeMap::new()),
            clock,
        }
    }

    /// With these inputs (tests).
    pub fn with_inputs(mut self, inputs: BTreeMap<StepId, StepOutput>) -> Self {
        self.inputs = Arc::new(inputs);
        self
    }

    /// With this deadline (tests).
    pub fn with_deadline(mut self, deadline: Option<Millis>) -> Self {
        self.deadline = deadline;
        self
    }

    /// The typed output of a dependency, as recorded when it succeeded.
    pub fn input<T: DeserializeOwned>(&self, from: &StepHandle<T>) -> Result<T, ActionError> {
        let output = self.inputs.get(&from.id).ok_or_else(|| {
            ActionError::permanent(format!(
                "step {} needs the output of step {}, which it does not have (not a dependency, or it did not succeed)",
                self.step, from.id
            ))
        })?;
        serde_json::from_str(&output.value).map_err(|e| {
            ActionError::permanent(format!("the recorded output of step {} does not read as expected by step {}: {e}", from.id, self.step))
        })
    }

    /// Time left until the step deadline, by the injected clock.
    pub fn remaining(&self) -> Option<Duration> {
        let deadline = self.deadline?;
        Some(Duration::from_millis(u64::try_from(deadline.saturating_sub(self.clock.now_ms())).unwrap_or(0)))
    }

    /// The shorter of `own` (an action's own timeout) and the time left until
    /// the step deadline.
    pub fn timeout(&self, own: Option<Duration>) -> Option<Duration> {
        match (own, self.remaining()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs `work` until it ends, the attempt is cancelled, or the step
    /// deadline passes — whichever comes first. `what` names the work in the
    /// error ("the drain of k8s-worker-1"). Dropping `work` must stop it.
    pub async fn guard<T>(
        &self,
        what: &str,
        work: impl Future<Output = Result<T, ActionError>>,
    ) -> Result<T, ActionError> {
        let deadline = async {
            match self.remaining() {
                Some(left) => tokio::time::sleep(left).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = work => result,
            () = self.cancel.cancelled() => Err(ActionError::retryable(format!("{what} was cancelled"))),
            () = deadline => Err(ActionError::retryable(format!("{what} did not finish before the step deadline"))),
        }
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
    /// Is trying again without a change expected to help?
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

/// What an attempt produced: a summary line and a JSON value.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionOutput {
    pub summary: String,
    pub value: serde_json::Value,
}

impl ActionOutput {
    /// A summary and no value.
    pub fn new(summary: impl Into<String>) -> Self {
        ActionOutput { summary: summary.into(), value: serde_json::Value::Null }
    }

    pub fn with_value(summary: impl Into<String>, value: serde_json::Value) -> Self {
        ActionOutput { summary: summary.into(), value }
    }

    /// The record kept in the history, refused when the value is over
    /// [`MAX_OUTPUT_BYTES`] (a cut JSON value would be worse than none).
    pub fn into_record(self, step: &StepId) -> Result<StepOutput, ActionError> {
        let value = serde_json::to_string(&self.value)
            .map_err(|e| ActionError::permanent(format!("the output of step {step} cannot be written as JSON: {e}")))?;
        if value.len() > MAX_OUTPUT_BYTES {
            return Err(ActionError::permanent(format!(
                "the output of step {step} is {} bytes, over the {} KiB a step may record",
                value.len(),
                MAX_OUTPUT_BYTES / 1024
            )));
        }
        let summary = crate::core::tail(&self.summary, 4096);
        Ok(StepOutput { summary, value })
    }
}

/// A side effect a step performs, as the engine sees it. Derived from a
/// [`TypedAction`] by [`Typed`]; implemented directly only by tests.
pub trait Action: Send + Sync + 'static {
    /// A stable name of the kind of action (`kube.rollout-restart`, ...).
    fn kind(&self) -> &'static str;
    /// The action's parameters, as they define what it does (hashed into the
    /// definition hash; never secrets).
    fn params(&self) -> serde_json::Value;
    /// Performs one attempt.
    fn run(&self, ctx: ActionCtx) -> BoxFuture<'_, Result<ActionOutput, ActionError>>;
    /// For [`ResumeClass::Probe`](crate::ResumeClass::Probe) steps: tells
    /// whether an attempt that was lost with its process already took effect,
    /// and if so what it produced. The default cannot tell, so the step runs again.
    fn probe(&self, _ctx: ActionCtx) -> BoxFuture<'_, Result<Option<ActionOutput>, ActionError>> {
        Box::pin(async { Ok(None) })
    }
}

/// The shape of every concrete action: a kind, typed parameters, a typed
/// output, one attempt, an optional probe. The engine's [`Action`] is derived
/// from it by [`Typed`], which adds the span, the JSON output and its bound.
pub trait TypedAction: Send + Sync + 'static {
    /// What it does, stable (`etcd.snapshot-restore`).
    const KIND: &'static str;
    /// What defines what it does; hashed into the definition, so never a secret.
    type Params: Serialize;
    /// What it produces, recorded with the step's success and handed to the
    /// steps that depend on it.
    type Output: Serialize + DeserializeOwned + Send + 'static;

    fn params(&self) -> &Self::Params;

    /// One line for people (`dr status`), from the output.
    fn summary(&self, output: &Self::Output) -> String;

    /// One attempt.
    fn run(&self, ctx: &ActionCtx) -> impl Future<Output = Result<Self::Output, ActionError>> + Send;

    /// Did a lost attempt take effect? `Some(output)` when it did. Only
    /// consulted for probe-class steps; the default cannot tell.
    fn probe(&self, _ctx: &ActionCtx) -> impl Future<Output = Result<Option<Self::Output>, ActionError>> + Send {
        async { Ok(None) }
    }
}

/// A [`TypedAction`] as an engine [`Action`].
#[derive(Debug)]
pub struct Typed<A>(pub A);

impl<A: TypedAction> Typed<A> {
    fn record(&self, output: A::Output) -> Result<ActionOutput, ActionError> {
        let summary = self.0.summary(&output);
        let value = serde_json::to_value(&output)
            .map_err(|e| ActionError::permanent(format!("the output of {} cannot be written as JSON: {e}", A::KIND)))?;
        Ok(ActionOutput { summary, value })
    }
}

impl<A: TypedAction> Action for Typed<A> {
    fn kind(&self) -> &'static str {
        A::KIND
    }

    fn params(&self) -> serde_json::Value {
        serde_json::to_value(self.0.params()).unwrap_or(serde_json::Value::Null)
    }

    fn run(&self, ctx: ActionCtx) -> BoxFuture<'_, Result<ActionOutput, ActionError>> {
        let span = tracing::info_span!("action", dr.kind = A::KIND);
        Box::pin(
            async move {
                let output = self.0.run(&ctx).await?;
                self.record(output)
            }
            .instrument(span),
        )
    }

    fn probe(&self, ctx: ActionCtx) -> BoxFuture<'_, Result<Option<ActionOutput>, ActionError>> {
        let span = tracing::info_span!("probe", dr.kind = A::KIND);
        Box::pin(
            async move {
                match self.0.probe(&ctx).await? {
                    Some(output) => self.record(output).map(Some),
                    None => Ok(None),
                }
            }
            .instrument(span),
        )
    }
}

/// A step of a workflow under construction whose output has type `T`: what a
/// later step holds to read that output ([`ActionCtx::input`]) or to branch on
/// it, so that wiring an output to an input is checked by the compiler.
pub struct StepHandle<T> {
    pub(crate) id: StepId,
    _output: PhantomData<fn() -> T>,
}

impl<T> StepHandle<T> {
    pub(crate) fn new(id: StepId) -> Self {
        StepHandle { id, _output: PhantomData }
    }

    pub fn id(&self) -> &StepId {
        &self.id
    }
}

impl<T> Clone for StepHandle<T> {
    fn clone(&self) -> Self {
        StepHandle::new(self.id.clone())
    }
}

impl<T> std::fmt::Debug for StepHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StepHandle({})", self.id)
    }
}
