//! Fixtures shared by the Kubernetes action tests: the simulated API server
//! with a kubeconfig in a temp dir, an action context with a wall-clock
//! deadline (the test plays the engine), and running an action to its typed
//! JSON report (the last line of its summary).

#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use dr_orchestrator::{Action, ActionCtx, ActionError, RunId};
use dr_lab::kube::{ApiServer, KubeOptions};
use dr_workflows::actions::kube::KubeConnection;
use serde::de::DeserializeOwned;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

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
    #[allow(clippy::disallowed_methods)] // reason: the test plays the engine, which sets wall-clock deadlines
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    ActionCtx {
        run_id: RunId::new_v7(0, 0),
        workflow: "test".into(),
        step: step.into(),
        attempt: 1,
        cancel: CancellationToken::new(),
        deadline: Some(now + timeout.as_millis() as i64),
        inputs: Default::default(),
        clock: std::sync::Arc::new(dr_orchestrator::SystemClock),
    }
}

/// Runs one attempt and reads its typed report.
pub async fn run_report<T: DeserializeOwned>(action: &dyn Action, ctx: ActionCtx) -> Result<T, ActionError> {
    let out = action.run(ctx).await?;
    let json = out.summary.lines().last().unwrap_or_default();
    Ok(serde_json::from_str(json).unwrap_or_else(|e| panic!("output json {json:?}: {e}")))
}
