//! The `dr` engine: workflow definitions, the pure state machine, the runner
//! that drives runs to their end, retries, durable timers and the RTO clock.
//!
//! Owns: the [`Action`]/[`TypedAction`] and [`Catalog`] traits (implemented by
//! `dr-workflows`), workflow definitions with typed step handles, conditions
//! and gates,
//! [`core::transition`] (the pure core: no I/O, no clock reads), the
//! [`Runner`] (persists every transition through a [`dr_state::Store`] before
//! the side effect it allows), and [`rto`] projections.
//!
//! Refuses: any concrete action. It never names Kubernetes, SSH, etcd or a
//! command; those live in `dr-workflows`.

pub mod action;
pub mod clock;
pub mod condition;
pub mod control;
pub mod core;
pub mod definition;
mod error;
pub mod failpoint;
pub mod retry;
pub mod rto;
pub mod runner;

pub use clock::{Clock, SystemClock};
pub use action::{Action, ActionCtx, ActionError, ActionOutput, BoxFuture, StepHandle, Typed, TypedAction};
pub use condition::Condition;
pub use definition::{
    Catalog, CatalogError, ParamSpec, ResumeClass, StepBuilder, StepDef, WorkflowBuilder, WorkflowDef, WorkflowInfo,
};
pub use dr_state::{DurationMs, Millis, RunId, StepId, StepOutput};
pub use error::{Error, Result};
pub use retry::RetryPolicy;
pub use rto::Rto;
pub use runner::{CreateRequest, Observer, OperatorCommand, Runner, RunnerOptions};

/// Default RTO targets per level, from the DR guide: L1 15 min, L2 1 h, L3 2 h, L4 4 h.
pub fn default_target_secs(level: u8) -> u64 {
    match level {
        1 => 15 * 60,
        2 => 60 * 60,
        3 => 2 * 60 * 60,
        _ => 4 * 60 * 60,
    }
}
