//! Fixtures shared by the Kubernetes action tests: the simulated API server
//! with a kubeconfig in a temp dir, an action context with a wall-clock
//! deadline (the test plays the engine), and running an action to its typed
//! output.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use dr_orchestrator::{ActionCtx, ActionError, Clock, SystemClock, TypedAction};
use dr_lab::kube::{ApiServer, KubeOptions};
use dr_workflows::actions::kube::KubeConnection;
use tempfile::TempDir;

pub struct KubeLab {
    pub server: ApiServer,
    _dir: TempDir,
    pub kubeconfig: PathBuf,
}

impl KubeLab {
    /// The API server with its standard objects, healthy, and a kubeconfig for it.
    pub async fn start() -> KubeLab {
        let server = ApiServer::start(KubeOptions::default()).await.expect("api server starts");
        server.wait_healthy(Duration::from_secs(20)).await.expect("cluster healthy");
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        server.write_kubeconfig(&kubeconfig).unwrap();
        KubeLab { server, _dir: dir, kubeconfig }
    }

    pub fn connection(&self) -> KubeConnection {
        KubeConnection { kubeconfig: Some(self.kubeconfig.clone()), context: None }
    }
}

/// An attempt's context whose deadline is `timeout` from now.
pub fn ctx(timeout: Duration, step: &str) -> ActionCtx {
    let clock = Arc::new(SystemClock);
    let deadline = clock.now_ms() + timeout.as_millis() as i64;
    ActionCtx::detached(step, clock).with_deadline(Some(deadline))
}

/// Runs one attempt to its typed output.
pub async fn run_report<A: TypedAction>(action: &A, ctx: ActionCtx) -> Result<A::Output, ActionError> {
    action.run(&ctx).await
}
