//! Kubernetes actions (kube-rs, k8s-openapi): find unhealthy pods and their
//! owners, rollout restarts, node readiness, cordon / uncordon / drain,
//! pod deletion, ArgoCD Applications and health checks of the cluster.
//!
//! Owns: the connection to the API server (kubeconfig path or in-cluster
//! config, kube's own 429/503 retry turned off so the step's retry policy and
//! deadline decide), the mapping of API errors to retryable / permanent
//! [`ActionError`]s naming the server, and waits that watch (never sleep)
//! until a condition holds or the step's deadline passes ([`wait_for`],
//! [`pause`]: they say what they waited for; other calls run under
//! [`ActionCtx::guard`]).
//! Refuses: anything node-side (ssh), etcd, and retrying forever.

pub mod argocd;
pub mod capacity;
pub mod health;
pub mod manifests;
pub mod nodes;
pub mod pods;

use std::fmt::Debug;
use std::hash::Hash;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dr_orchestrator::{ActionCtx, ActionError};
use futures::StreamExt;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Config, Resource};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// How to reach the API server. Holds a path, never credentials.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeConnection {
    /// A kubeconfig file; when absent, the in-cluster config, then the
    /// default kubeconfig (`$KUBECONFIG`, `~/.kube/config`).
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context; its current context when absent.
    #[serde(default)]
    pub context: Option<String>,
}

/// A connected client and the server it talks to (for messages).
#[derive(Clone)]
pub struct Kube {
    pub client: Client,
    pub server: String,
}

impl KubeConnection {
    /// Builds a client; nothing is sent yet. kube's default retry of 429/503
    /// is turned off: the step's deadline and retry policy decide.
    pub async fn connect(&self) -> Result<Kube, ActionError> {
        let mut config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
                    ActionError::permanent(format!("cannot read kubeconfig {}: {e}; check the path in the configuration", path.display()))
                })?;
                let options = KubeConfigOptions { context: self.context.clone(), ..KubeConfigOptions::default() };
                Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(|e| {
                    ActionError::permanent(format!("kubeconfig {} is not usable: {e}", path.display()))
                })?
            }
            None => match Config::incluster() {
                Ok(config) => config,
                Err(_) => Config::infer().await.map_err(|e| {
                    ActionError::permanent(format!(
                        "no Kubernetes configuration: no kubeconfig given, not in a cluster, and none found ({e}); \
                         set the kubeconfig path"
                    ))
                })?,
            },
        };
        config.default_retry = false;
        config.connect_timeout = Some(Duration::from_secs(10));
        let server = config.cluster_url.to_string().trim_end_matches('/').to_owned();
        let client = Client::try_from(config)
            .map_err(|e| ActionError::permanent(format!("cannot build a Kubernetes client for {server}: {e}")))?;
        Ok(Kube { client, server })
    }
}

impl Kube {
    /// `what` failed with `error`: retryable when the server is unreachable,
    /// overloaded or failing (5xx, 429, 409), permanent when the request is
    /// wrong (404, 403, 422...).
    pub fn error(&self, what: &str, error: kube::Error) -> ActionError {
        let server = &self.server;
        match error {
            kube::Error::Api(status) => {
                let code = status.code;
                let detail = format!("{what} on the Kubernetes API server {server}: {code} {}: {}", status.reason, status.message);
                match code {
                    401 | 403 => ActionError::permanent(format!("{detail}; check the kubeconfig's credentials and RBAC")),
                    404 => ActionError::permanent(format!("{detail}; check the name and namespace")),
                    409 | 429 => ActionError::retryable(format!("{detail}; retry")),
                    c if c >= 500 => ActionError::retryable(format!(
                        "{detail}; the API server is failing, check the control plane (kubectl get --raw /readyz)"
                    )),
                    _ => ActionError::permanent(detail),
                }
            }
            kube::Error::HyperError(_) | kube::Error::Service(_) => ActionError::retryable(format!(
                "cannot reach the Kubernetes API server {server} ({what}): {error}; check that the control plane is up \
                 and reachable from here"
            )),
            other => ActionError::retryable(format!("{what} on the Kubernetes API server {server}: {other}")),
        }
    }
}

/// The HTTP status of an API error, if the server answered.
pub fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// A `kind/namespace/name` reference to an object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind.to_lowercase(), self.name)
        } else {
            write!(f, "{}/{} -n {}", self.kind.to_lowercase(), self.name, self.namespace)
        }
    }
}

/// `": a, b"` to follow a count in a summary, or nothing when `names` is empty.
pub(crate) fn listed(names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(": {}", names.join(", "))
    }
}

/// Milliseconds since `started`.
pub fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Sleeps until the step deadline (forever without one).
async fn step_deadline(ctx: &ActionCtx) {
    match ctx.remaining() {
        Some(left) => tokio::time::sleep(left).await,
        None => std::future::pending().await,
    }
}

/// Waits `delay`, or less when the step deadline comes first; false when the
/// deadline came first or the attempt was cancelled (the caller then says
/// what it was waiting for).
pub async fn pause(ctx: &ActionCtx, delay: Duration) -> bool {
    let deadline_first = ctx.remaining().is_some_and(|left| left <= delay);
    tokio::select! {
        () = tokio::time::sleep(ctx.timeout(Some(delay)).unwrap_or(delay)) => !deadline_first,
        () = ctx.cancel.cancelled() => false,
    }
}

/// Watches the objects `api` and `watch` select until `check` accepts what
/// the cluster holds (`Ok`), the step's deadline passes or the run is
/// cancelled. `check` explains with `Err` why it is not yet satisfied; the
/// last explanation ends the timeout message. Watch errors (API server
/// gone) are retried with kube's backoff and named if the deadline passes.
pub async fn wait_for<K, T>(
    kube: &Kube,
    api: Api<K>,
    dyntype: K::DynamicType,
    watch: watcher::Config,
    ctx: &ActionCtx,
    what: &str,
    mut check: impl FnMut(&[Arc<K>]) -> Result<T, String>,
) -> Result<T, ActionError>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    let writer = Writer::new(dyntype);
    let reader = writer.as_reader();
    let stream = reflector::reflector(writer, watcher(api, watch).default_backoff());
    let mut stream = std::pin::pin!(stream);
    let started = Instant::now();
    let mut deadline = std::pin::pin!(step_deadline(ctx));
    let mut initialized = false;
    let mut why_not = "the watch has not listed the objects yet".to_owned();
    let mut last_error: Option<String> = None;
    loop {
        let event = tokio::select! {
            event = stream.next() => event,
            () = &mut deadline => {
                let error = last_error.map(|e| format!("; last watch error: {e}")).unwrap_or_default();
                return Err(ActionError::retryable(format!(
                    "{what}: not done before the step's deadline ({} ms): {why_not}{error}",
                    elapsed_ms(started)
                )));
            }
            () = ctx.cancel.cancelled() => return Err(ActionError::retryable(format!("{what}: cancelled"))),
        };
        match event {
            None => return Err(ActionError::retryable(format!("{what}: the watch on {} ended", kube.server))),
            Some(Err(e)) => {
                // A request the server refuses (403, 404...) fails now; an outage waits for the deadline.
                let text = e.to_string();
                let permanent = match e {
                    watcher::Error::InitialListFailed(inner) | watcher::Error::WatchStartFailed(inner) => {
                        Some(kube.error(what, inner)).filter(|error| !error.retryable)
                    }
                    _ => None,
                };
                if let Some(error) = permanent {
                    return Err(error);
                }
                tracing::debug!(error = %text, "watch error, retrying");
                last_error = Some(format!("{text} (API server {})", kube.server));
            }
            Some(Ok(event)) => {
                last_error = None;
                if matches!(event, watcher::Event::InitDone) {
                    initialized = true;
                }
                if initialized && !matches!(event, watcher::Event::Init | watcher::Event::InitApply(_)) {
                    match check(&reader.state()) {
                        Ok(done) => return Ok(done),
                        Err(why) => why_not = why,
                    }
                }
            }
        }
    }
}

/// Now, as Kubernetes writes timestamps (RFC 3339, UTC, seconds).
pub fn now_rfc3339() -> String {
    // An adapter: the annotation kubectl writes carries the wall clock.
    let now = k8s_openapi::jiff::Timestamp::now();
    now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn default_true() -> bool {
    true
}
