//! The actions DR workflows are made of, each an implementation of
//! [`dr_orchestrator::TypedAction`]: a kind, serde-typed parameters (never a
//! secret), a typed output with a one-line summary, one attempt per `run`,
//! an optional probe; errors that say what failed, where, and what the
//! operator can do. The span, the JSON output and the step's deadline and
//! cancellation ([`dr_orchestrator::ActionCtx::guard`]) are the engine's.
//!
//! Owns: [`blocking`], the one way an action runs blocking work (libssh2,
//! ureq, file hashing and extraction) off the runtime's threads.

pub mod backup;
pub mod command;
pub mod decision;
pub mod http;
pub mod kube;
pub mod kubeadm;
pub mod output;
pub mod snapshot;
pub mod etcd;
pub mod ssh;
pub mod terraform;

use dr_orchestrator::{ActionCtx, ActionError};
use tokio_util::sync::CancellationToken;

/// Runs blocking `work` on tokio's blocking pool until it ends, the attempt is
/// cancelled or the step deadline passes ([`ActionCtx::guard`]). The token
/// `work` gets is cancelled in the two latter cases, so that it stops between
/// chunks, files or polls instead of running on unseen.
pub(crate) async fn blocking<T: Send + 'static>(
    ctx: &ActionCtx,
    what: &str,
    work: impl FnOnce(&CancellationToken) -> Result<T, ActionError> + Send + 'static,
) -> Result<T, ActionError> {
    let token = ctx.cancel.child_token();
    let _stop_when_abandoned = token.clone().drop_guard();
    let span = tracing::Span::current();
    let task = tokio::task::spawn_blocking({
        let token = token.clone();
        move || span.in_scope(|| work(&token))
    });
    ctx.guard(what, async {
        task.await.map_err(|e| ActionError::retryable(format!("{what} did not complete: {e}")))?
    })
    .await
}
