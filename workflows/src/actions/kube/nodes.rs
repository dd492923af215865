//! Nodes: wait for a node's `Ready` condition by watching (the guide's
//! `sleep 300`, bounded by the step's deadline), cordon, uncordon, and drain
//! as `kubectl drain --ignore-daemonsets --delete-emptydir-data` does it
//! (evictions through policy/v1, PDB-blocked ones retried with backoff until
//! the deadline). Refuses to drain pods without a controller unless forced.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use dr_orchestrator::{Action, ActionCtx, ActionError, ActionOutput, BoxFuture};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{EvictParams, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::pods::controller_of;
use super::{default_true, output, span, status_code, wait_for, Bounds, Kube, KubeConnection};

/// The node's `Ready` condition: (status, reason).
pub fn node_ready(node: &Node) -> (bool, String) {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map_or((false, "no Ready condition".to_owned()), |c| {
            (c.status == "True", format!("Ready={} ({})", c.status, c.reason.clone().unwrap_or_default()))
        })
}

// ---------------------------------------------------------------------------
// kube.node-wait-ready

/// Waits until a node's `Ready` condition is True (or, with `ready: false`,
/// until it is not): a watch bounded by the step's deadline.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeWaitReady {
    #[serde(flatten)]
    pub connection: KubeConnection,
    pub node: String,
    /// The state to wait for (default true: Ready).
    #[serde(default = "default_true")]
    pub ready: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeWaitReport {
    pub node: String,
    pub ready: bool,
    pub condition: String,
    pub waited_ms: u64,
}

impl NodeWaitReady {
    async fn wait(&self, kube: &Kube, bounds: &Bounds) -> Result<NodeWaitReport, ActionError> {
        let api: Api<Node> = Api::all(kube.client.clone());
        let watch = watcher::Config::default().fields(&format!("metadata.name={}", self.node));
        let want = if self.ready { "Ready" } else { "NotReady" };
        let what = format!("waiting for node {} to be {want} (API server {})", self.node, kube.server);
        let condition = wait_for(kube, api, (), watch, bounds, &what, |items: &[Arc<Node>]| {
            let Some(node) = items.iter().find(|n| n.name_any() == self.node) else {
                return Err(format!("node {} is not registered (kubeadm join?)", self.node));
            };
            let (ready, condition) = node_ready(node);
            if ready == self.ready {
                Ok(condition)
            } else {
                Err(format!("node {} is {condition}", self.node))
            }
        })
        .await?;
        Ok(NodeWaitReport { node: self.node.clone(), ready: self.ready, condition, waited_ms: bounds.elapsed_ms() })
    }
}

impl Action for NodeWaitReady {
    fn kind(&self) -> &'static str {
        "kube.node-wait-ready"
    }

    fn params(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn run(&self, ctx: ActionCtx) -> BoxFuture<'_, Result<ActionOutput, ActionError>> {
        let span = span(&ctx, self.kind(), &self.node);
        Box::pin(
            async move {
                let bounds = Bounds::of(&ctx);
                let kube = bounds.run("connecting to the API server", self.connection.connect()).await?;
                let report = self.wait(&kube, &bounds).await?;
                Ok(output(format!("node {} is {} after {} ms", report.node, report.condition, report.waited_ms), &report))
            }
            .instrument(span),
        )
    }

    /// Done when the node is in the state waited for.
    fn probe(&self, _ctx: ActionCtx) -> BoxFuture<'_, Result<Option<ActionOutput>, ActionError>> {
        Box::pin(async move {
            let took: Result<bool, ActionError> = async move {
            let kube = self.connection.connect().await?;
            let api: Api<Node> = Api::all(kube.client.clone());
            let node = api.get_opt(&self.node).await.map_err(|e| kube.error(&format!("reading node {}", self.node), e))?;
            Ok(node.is_some_and(|n| node_ready(&n).0 == self.ready))
            }
            .await;
            Ok(took?.then(|| ActionOutput::new("probe: the lost attempt had taken effect")))
        })
    }
}

// ---------------------------------------------------------------------------
// kube.cordon / kube.uncordon

async fn set_unschedulable(kube: &Kube, node: &str, unschedulable: bool) -> Result<(), ActionError> {
    let api: Api<Node> = Api::all(kube.client.clone());
    let patch = serde_json::json!({"spec": {"unschedulable": unschedulable}});
    let verb = if unschedulable { "cordoning" } else { "uncordoning" };
    api.patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| kube.error(&format!("{verb} node {node}"), e))?;
    Ok(())
}

/// `kubectl cordon NODE` (`cordon: true`) or `kubectl uncordon NODE`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cordon {
    #[serde(flatten)]
    pub connection: KubeConnection,
    pub node: String,
    /// true: cordon; false: uncordon.
    pub cordon: bool,
}

impl Action for Cordon {
    fn kind(&self) -> &'static str {
        if self.cordon {
            "kube.cordon"
        } else {
            "kube.uncordon"
        }
    }

    fn params(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn run(&self, ctx: ActionCtx) -> BoxFuture<'_, Result<ActionOutput, ActionError>> {
        let span = span(&ctx, self.kind(), &self.node);
        Box::pin(
            async move {
                let bounds = Bounds::of(&ctx);
                bounds
                    .run(&format!("{} of node {}", self.kind(), self.node), async {
                        let kube = self.connection.connect().await?;
                        set_unschedulable(&kube, &self.node, self.cordon).await
                    })
                    .await?;
                let state = if self.cordon { "cordoned" } else { "uncordoned" };
                Ok(output(format!("node {} {state}", self.node), &serde_json::json!({"node": self.node, "unschedulable": self.cordon})))
            }
            .instrument(span),
        )
    }

    /// Done when the node's `spec.unschedulable` is what this step sets.
    fn probe(&self, _ctx: ActionCtx) -> BoxFuture<'_, Result<Option<ActionOutput>, ActionError>> {
        Box::pin(async move {
            let took: Result<bool, ActionError> = async move {
            let kube = self.connection.connect().await?;
            let api: Api<Node> = Api::all(kube.client.clone());
            let node = api.get(&self.node).await.map_err(|e| kube.error(&format!("reading node {}", self.node), e))?;
            Ok(node.spec.and_then(|s| s.unschedulable).unwrap_or(false) == self.cordon)
            }
            .await;
            Ok(took?.then(|| ActionOutput::new("probe: the lost attempt had taken effect")))
        })
    }
}

// ---------------------------------------------------------------------------
// kube.drain

/// `kubectl drain NODE --ignore-daemonsets --delete-emptydir-data`: cordon,
/// then evict every pod but DaemonSet-owned and mirror pods through the
/// Eviction API. A 429 (PodDisruptionBudget) is retried with backoff until the
/// step's deadline; pods without a controller are refused unless `force`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Drain {
    #[serde(flatten)]
    pub connection: KubeConnection,
    pub node: String,
    /// Also evict pods no controller re-creates (they are lost).
    #[serde(default)]
    pub force: bool,
    /// Evict pods with emptyDir volumes (their data is lost); default true.
    #[serde(default = "default_true")]
    pub delete_emptydir_data: bool,
    /// First delay between eviction rounds of blocked pods (ms), doubling up to `max_backoff_ms`.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
}

fn default_backoff_ms() -> u64 {
    500
}

fn default_max_backoff_ms() -> u64 {
    5_000
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedPod {
    pub pod: String,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReport {
    pub node: String,
    /// `namespace/name` of every evicted pod.
    pub evicted: Vec<String>,
    /// DaemonSet-owned pods, left in place.
    pub daemonset_pods: Vec<String>,
    /// Mirror (static) pods, left in place.
    pub mirror_pods: Vec<String>,
    /// Pods still blocked (empty on success).
    pub blocked: Vec<BlockedPod>,
    /// Eviction rounds.
    pub rounds: u32,
    pub waited_ms: u64,
}

fn key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

fn is_mirror(pod: &Pod) -> bool {
    pod.annotations().contains_key("kubernetes.io/config.mirror")
}

fn has_emptydir(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.volumes.as_ref()).is_some_and(|vs| vs.iter().any(|v| v.empty_dir.is_some()))
}

fn finished(pod: &Pod) -> bool {
    matches!(super::pods::pod_phase(pod).as_str(), "Succeeded" | "Failed")
}

/// The cause the API server gave for a refused eviction (the PDB's message).
fn eviction_reason(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            let causes: Vec<String> = status
                .details
                .as_ref()
                .map(|d| d.causes.iter().map(|c| c.message.clone()).filter(|m| !m.is_empty()).collect())
                .unwrap_or_default();
            if causes.is_empty() {
                format!("{} {}", status.code, status.message)
            } else {
                format!("{} {} ({})", status.code, status.message, causes.join("; "))
            }
        }
        other => other.to_string(),
    }
}

impl Drain {
    async fn drain(&self, kube: &Kube, bounds: &Bounds, report: &mut DrainReport) -> Result<(), ActionError> {
        let node = &self.node;
        set_unschedulable(kube, node, true).await?;
        let all: Api<Pod> = Api::all(kube.client.clone());
        let on_node = format!("spec.nodeName={node}");
        let pods = all
            .list(&ListParams::default().fields(&on_node))
            .await
            .map_err(|e| kube.error(&format!("listing the pods of node {node}"), e))?;

        let mut to_evict = Vec::new();
        let mut unmanaged = Vec::new();
        let mut emptydir = Vec::new();
        for pod in pods.items {
            if is_mirror(&pod) {
                report.mirror_pods.push(key(&pod));
                continue;
            }
            let owner = controller_of(&pod.metadata);
            if owner.as_ref().is_some_and(|(kind, _)| kind == "DaemonSet") && !finished(&pod) {
                report.daemonset_pods.push(key(&pod));
                continue;
            }
            if owner.is_none() && !finished(&pod) && !self.force {
                unmanaged.push(key(&pod));
            }
            if has_emptydir(&pod) && !finished(&pod) && !self.delete_emptydir_data {
                emptydir.push(key(&pod));
            }
            to_evict.push(pod);
        }
        if !unmanaged.is_empty() || !emptydir.is_empty() {
            let mut problems = Vec::new();
            if !unmanaged.is_empty() {
                problems.push(format!(
                    "pods not managed by a controller (lost if evicted; set force to evict them): {}",
                    unmanaged.join(", ")
                ));
            }
            if !emptydir.is_empty() {
                problems.push(format!(
                    "pods with emptyDir data (set delete_emptydir_data to evict them): {}",
                    emptydir.join(", ")
                ));
            }
            return Err(ActionError::permanent(format!(
                "drain of node {node} refused, node left cordoned, nothing evicted: {}",
                problems.join("; ")
            )));
        }

        let mut backoff = Duration::from_millis(self.backoff_ms.max(1));
        let max_backoff = Duration::from_millis(self.max_backoff_ms.max(self.backoff_ms).max(1));
        let mut evicted_uids = BTreeSet::new();
        loop {
            report.rounds += 1;
            let mut blocked = Vec::new();
            let mut still = Vec::new();
            for pod in to_evict {
                let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
                let api: Api<Pod> = Api::namespaced(kube.client.clone(), &ns);
                match api.evict(&name, &EvictParams::default()).await {
                    Ok(_) => {
                        tracing::info!(pod = %key(&pod), node = %node, "evicted");
                        evicted_uids.insert(pod.uid().unwrap_or_default());
                        report.evicted.push(key(&pod));
                    }
                    Err(e) if status_code(&e) == Some(404) => report.evicted.push(key(&pod)),
                    Err(e) if status_code(&e) == Some(429) => {
                        tracing::info!(pod = %key(&pod), reason = %eviction_reason(&e), "eviction blocked, will retry");
                        blocked.push(BlockedPod { pod: key(&pod), reason: eviction_reason(&e) });
                        still.push(pod);
                    }
                    Err(e) => return Err(kube.error(&format!("evicting pod {} from node {node}", key(&pod)), e)),
                }
            }
            report.blocked = blocked;
            if still.is_empty() {
                break;
            }
            to_evict = still;
            if !bounds.pause(backoff).await {
                let list: Vec<String> = report.blocked.iter().map(|b| format!("{}: {}", b.pod, b.reason)).collect();
                let what = if bounds.cancel.is_cancelled() { "cancelled" } else { "not finished before the step's deadline" };
                return Err(ActionError::retryable(format!(
                    "drain of node {node} {what}: {} pods blocked by disruption budgets after {} rounds: {}; evicted: [{}]; \
                     the node stays cordoned; scale the workloads up or relax their PodDisruptionBudgets, then retry",
                    list.len(),
                    report.rounds,
                    list.join("; "),
                    report.evicted.join(", ")
                )));
            }
            backoff = (backoff * 2).min(max_backoff);
        }

        // The evicted pods are gone from the node (graceful termination).
        if !evicted_uids.is_empty() {
            let watch = watcher::Config::default().fields(&on_node);
            let what = format!("evicted pods leaving node {node}");
            wait_for(kube, all, (), watch, bounds, &what, |items: &[Arc<Pod>]| {
                let left: Vec<String> =
                    items.iter().filter(|p| evicted_uids.contains(&p.uid().unwrap_or_default())).map(|p| key(p)).collect();
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("still terminating: {}", left.join(", ")))
                }
            })
            .await?;
        }
        Ok(())
    }
}

impl Action for Drain {
    fn kind(&self) -> &'static str {
        "kube.drain"
    }

    fn params(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn run(&self, ctx: ActionCtx) -> BoxFuture<'_, Result<ActionOutput, ActionError>> {
        let span = span(&ctx, self.kind(), &self.node);
        Box::pin(
            async move {
                let bounds = Bounds::of(&ctx);
                let kube = bounds.run("connecting to the API server", self.connection.connect()).await?;
                let mut report = DrainReport { node: self.node.clone(), ..DrainReport::default() };
                tokio::select! {
                    result = self.drain(&kube, &bounds, &mut report) => result?,
                    () = tokio::time::sleep_until(bounds.deadline + Duration::from_millis(50)) => {
                        return Err(ActionError::retryable(format!(
                            "drain of node {} did not finish before the step's deadline (API server {})",
                            self.node, kube.server
                        )));
                    }
                }
                report.waited_ms = bounds.elapsed_ms();
                let summary = format!(
                    "node {} drained: {} pods evicted, {} DaemonSet pods left",
                    report.node,
                    report.evicted.len(),
                    report.daemonset_pods.len()
                );
                Ok(output(summary, &report))
            }
            .instrument(span),
        )
    }

    /// Done when the node is cordoned and only DaemonSet, mirror and
    /// finished pods are left on it.
    fn probe(&self, _ctx: ActionCtx) -> BoxFuture<'_, Result<Option<ActionOutput>, ActionError>> {
        Box::pin(async move {
            let took: Result<bool, ActionError> = async move {
            let kube = self.connection.connect().await?;
            let nodes: Api<Node> = Api::all(kube.client.clone());
            let node = nodes.get(&self.node).await.map_err(|e| kube.error(&format!("reading node {}", self.node), e))?;
            if !node.spec.and_then(|s| s.unschedulable).unwrap_or(false) {
                return Ok(false);
            }
            let pods: Api<Pod> = Api::all(kube.client.clone());
            let on_node = pods
                .list(&ListParams::default().fields(&format!("spec.nodeName={}", self.node)))
                .await
                .map_err(|e| kube.error(&format!("listing the pods of node {}", self.node), e))?;
            Ok(on_node.items.iter().all(|p| {
                is_mirror(p) || finished(p) || controller_of(&p.metadata).is_some_and(|(kind, _)| kind == "DaemonSet")
            }))
            }
            .await;
            Ok(took?.then(|| ActionOutput::new("probe: the lost attempt had taken effect")))
        })
    }
}
