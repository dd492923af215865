//! Nodes: wait for a node's `Ready` condition by watching (the guide's
//! `sleep 300`, bounded by the step's deadline), cordon, uncordon, and drain
//! as `kubectl drain --ignore-daemonsets --delete-emptydir-data` does it
//! (evictions through policy/v1, PDB-blocked ones retried with backoff until
//! the deadline). Refuses to drain pods without a controller unless forced.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use dr_orchestrator::{ActionCtx, ActionError, TypedAction};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{EvictParams, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::pods::controller_of;
use super::{default_true, elapsed_ms, pause, status_code, wait_for, Kube, KubeConnection};

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
    async fn wait(&self, kube: &Kube, ctx: &ActionCtx, started: Instant) -> Result<NodeWaitReport, ActionError> {
        let api: Api<Node> = Api::all(kube.client.clone());
        let watch = watcher::Config::default().fields(&format!("metadata.name={}", self.node));
        let want = if self.ready { "Ready" } else { "NotReady" };
        let what = format!("waiting for node {} to be {want} (API server {})", self.node, kube.server);
        let condition = wait_for(kube, api, (), watch, ctx, &what, |items: &[Arc<Node>]| {
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
        Ok(NodeWaitReport { node: self.node.clone(), ready: self.ready, condition, waited_ms: elapsed_ms(started) })
    }
}

/// Reads a node (`None` when it is not registered).
async fn read_node(ctx: &ActionCtx, connection: &KubeConnection, name: &str) -> Result<Option<Node>, ActionError> {
    ctx.guard(&format!("reading node {name}"), async {
        let kube = connection.connect().await?;
        let api: Api<Node> = Api::all(kube.client.clone());
        api.get_opt(name).await.map_err(|e| kube.error(&format!("reading node {name}"), e))
    })
    .await
}

impl TypedAction for NodeWaitReady {
    const KIND: &'static str = "kube.node-wait-ready";
    type Params = Self;
    type Output = NodeWaitReport;

    fn params(&self) -> &Self {
        self
    }

    fn summary(&self, report: &NodeWaitReport) -> String {
        format!("node {} is {} after {} ms", report.node, report.condition, report.waited_ms)
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<NodeWaitReport, ActionError> {
        let started = Instant::now();
        let kube = ctx.guard("connecting to the API server", self.connection.connect()).await?;
        self.wait(&kube, ctx, started).await
    }

    /// Done when the node is in the state waited for.
    async fn probe(&self, ctx: &ActionCtx) -> Result<Option<NodeWaitReport>, ActionError> {
        let node = read_node(ctx, &self.connection, &self.node).await?;
        Ok(node.map(|n| node_ready(&n)).filter(|(ready, _)| *ready == self.ready).map(|(ready, condition)| {
            NodeWaitReport { node: self.node.clone(), ready, condition, waited_ms: 0 }
        }))
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

/// `kubectl cordon NODE` ([`Cordon`], `CORDON` true) or `kubectl uncordon
/// NODE` ([`Uncordon`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SetUnschedulable<const CORDON: bool> {
    #[serde(flatten)]
    pub connection: KubeConnection,
    pub node: String,
}

/// `kube.cordon`.
pub type Cordon = SetUnschedulable<true>;
/// `kube.uncordon`.
pub type Uncordon = SetUnschedulable<false>;

/// A node's `spec.unschedulable` as a cordon or uncordon left it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeScheduling {
    pub node: String,
    pub unschedulable: bool,
}

impl<const CORDON: bool> TypedAction for SetUnschedulable<CORDON> {
    const KIND: &'static str = if CORDON { "kube.cordon" } else { "kube.uncordon" };
    type Params = Self;
    type Output = NodeScheduling;

    fn params(&self) -> &Self {
        self
    }

    fn summary(&self, output: &NodeScheduling) -> String {
        format!("node {} {}", output.node, if output.unschedulable { "cordoned" } else { "uncordoned" })
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<NodeScheduling, ActionError> {
        ctx.guard(&format!("{} of node {}", Self::KIND, self.node), async {
            let kube = self.connection.connect().await?;
            set_unschedulable(&kube, &self.node, CORDON).await
        })
        .await?;
        Ok(NodeScheduling { node: self.node.clone(), unschedulable: CORDON })
    }

    /// Done when the node's `spec.unschedulable` is what this step sets.
    async fn probe(&self, ctx: &ActionCtx) -> Result<Option<NodeScheduling>, ActionError> {
        let node = read_node(ctx, &self.connection, &self.node)
            .await?
            .ok_or_else(|| ActionError::permanent(format!("node {} is not registered", self.node)))?;
        let unschedulable = node.spec.and_then(|s| s.unschedulable).unwrap_or(false);
        Ok((unschedulable == CORDON).then(|| NodeScheduling { node: self.node.clone(), unschedulable }))
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
    async fn drain(&self, kube: &Kube, ctx: &ActionCtx, report: &mut DrainReport) -> Result<(), ActionError> {
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
            if !pause(ctx, backoff).await {
                let list: Vec<String> = report.blocked.iter().map(|b| format!("{}: {}", b.pod, b.reason)).collect();
                let what = if ctx.cancel.is_cancelled() { "cancelled" } else { "not finished before the step's deadline" };
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
            wait_for(kube, all, (), watch, ctx, &what, |items: &[Arc<Pod>]| {
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

impl TypedAction for Drain {
    const KIND: &'static str = "kube.drain";
    type Params = Self;
    type Output = DrainReport;

    fn params(&self) -> &Self {
        self
    }

    fn summary(&self, report: &DrainReport) -> String {
        format!(
            "node {} drained: {} pods evicted, {} DaemonSet pods left",
            report.node,
            report.evicted.len(),
            report.daemonset_pods.len()
        )
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<DrainReport, ActionError> {
        let started = Instant::now();
        let kube = ctx.guard("connecting to the API server", self.connection.connect()).await?;
        let mut report = DrainReport { node: self.node.clone(), ..DrainReport::default() };
        // The drain's waits end at the deadline or a cancel saying what
        // blocked them; this backstop, a moment later so that their message
        // wins, ends an API call that hangs past the deadline.
        let backstop = async {
            match ctx.remaining() {
                Some(left) => tokio::time::sleep(left + Duration::from_millis(50)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = self.drain(&kube, ctx, &mut report) => result?,
            () = backstop => {
                return Err(ActionError::retryable(format!(
                    "drain of node {} did not finish before the step's deadline (API server {})",
                    self.node, kube.server
                )));
            }
        }
        report.waited_ms = elapsed_ms(started);
        Ok(report)
    }

    /// Done when the node is cordoned and only DaemonSet, mirror and
    /// finished pods are left on it; the output lists those.
    async fn probe(&self, ctx: &ActionCtx) -> Result<Option<DrainReport>, ActionError> {
        let node = &self.node;
        ctx.guard(&format!("reading the pods of node {node}"), async {
            let kube = self.connection.connect().await?;
            let nodes: Api<Node> = Api::all(kube.client.clone());
            let read = nodes.get(node).await.map_err(|e| kube.error(&format!("reading node {node}"), e))?;
            if !read.spec.and_then(|s| s.unschedulable).unwrap_or(false) {
                return Ok(None);
            }
            let pods: Api<Pod> = Api::all(kube.client.clone());
            let on_node = pods
                .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
                .await
                .map_err(|e| kube.error(&format!("listing the pods of node {node}"), e))?;
            let mut report = DrainReport { node: node.clone(), ..DrainReport::default() };
            for pod in &on_node.items {
                if is_mirror(pod) {
                    report.mirror_pods.push(key(pod));
                } else if controller_of(&pod.metadata).is_some_and(|(kind, _)| kind == "DaemonSet") {
                    report.daemonset_pods.push(key(pod));
                } else if !finished(pod) {
                    return Ok(None);
                }
            }
            Ok(Some(report))
        })
        .await
    }
}
