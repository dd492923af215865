//! Pods and their workloads: pods that are not Running/Succeeded or not
//! Ready with their owner chain (so a workflow restarts the owner, not the
//! pod), rollout restart of a Deployment, DaemonSet or StatefulSet waited on
//! by watching the rollout, the restart of every workload of a namespace or
//! of the owners a `kube.unhealthy-pods` step found (read from its recorded
//! output), and deletion of a namespace's pods waited on until their
//! replacements are Ready. Refuses restarting anything else (a bare pod has
//! no owner to restart: it is reported, never deleted blindly).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::Arc;

use dr_orchestrator::{ActionCtx, ActionError, StepHandle, StepId, TypedAction};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{default_true, elapsed_ms, listed, now_rfc3339, wait_for, Kube, KubeConnection, ObjectRef};

// ---------------------------------------------------------------------------
// Pod state

/// Whether a pod is Ready (its `Ready` condition is True).
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn pod_phase(pod: &Pod) -> String {
    pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_else(|| "Unknown".to_owned())
}

/// Healthy: Succeeded, or Running and Ready.
pub fn pod_healthy(pod: &Pod) -> bool {
    match pod_phase(pod).as_str() {
        "Succeeded" => true,
        "Running" => pod_ready(pod),
        _ => false,
    }
}

/// Why a pod is not healthy: container waiting / terminated reasons, the
/// Ready condition's reason, the phase.
pub fn pod_reasons(pod: &Pod) -> Vec<String> {
    let mut reasons = BTreeSet::new();
    if let Some(status) = &pod.status {
        for cs in status.container_statuses.iter().flatten().chain(status.init_container_statuses.iter().flatten()) {
            if let Some(state) = &cs.state {
                if let Some(reason) = state.waiting.as_ref().and_then(|w| w.reason.clone()) {
                    reasons.insert(format!("{}: {reason}", cs.name));
                }
                if let Some(reason) = state.terminated.as_ref().and_then(|t| t.reason.clone()) {
                    reasons.insert(format!("{}: terminated {reason}", cs.name));
                }
            }
        }
        for c in status.conditions.iter().flatten() {
            if c.type_ == "Ready" && c.status != "True" {
                reasons.insert(format!("not ready: {}", c.reason.clone().unwrap_or_else(|| c.status.clone())));
            }
        }
        if let Some(reason) = &status.reason {
            reasons.insert(reason.clone());
        }
    }
    reasons.into_iter().collect()
}

fn restarts(pod: &Pod) -> i32 {
    pod.status.as_ref().and_then(|s| s.container_statuses.as_ref()).map_or(0, |cs| cs.iter().map(|c| c.restart_count).sum())
}

/// The controller owner of an object, as (kind, name).
pub fn controller_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<(String, String)> {
    meta.owner_references.iter().flatten().find(|o| o.controller == Some(true)).map(|o| (o.kind.clone(), o.name.clone()))
}

// ---------------------------------------------------------------------------
// kube.unhealthy-pods

/// Finds pods that are not Running/Succeeded or not Ready, with their owners.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UnhealthyPods {
    #[serde(flatten)]
    pub connection: KubeConnection,
    /// One namespace; all when absent.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Fail (retryable) when any pod is unhealthy: a verification step.
    #[serde(default)]
    pub fail_if_any: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnhealthyPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: Option<String>,
    pub phase: String,
    pub ready: bool,
    pub restarts: i32,
    pub reasons: Vec<String>,
    /// From the pod's controller up: ReplicaSet, then Deployment.
    pub owner_chain: Vec<ObjectRef>,
    /// What to restart: the top of the owner chain (none for a bare pod).
    pub restart: Option<ObjectRef>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnhealthyPodsReport {
    pub checked: usize,
    pub unhealthy: Vec<UnhealthyPod>,
    /// The distinct workloads to restart (Deployments, DaemonSets, StatefulSets).
    pub restart: Vec<ObjectRef>,
}

impl UnhealthyPodsReport {
    /// `namespace/name` of each unhealthy pod.
    pub fn names(&self) -> Vec<String> {
        self.unhealthy.iter().map(|p| format!("{}/{}", p.namespace, p.name)).collect()
    }
}

pub async fn unhealthy_pods(kube: &Kube, namespace: Option<&str>) -> Result<UnhealthyPodsReport, ActionError> {
    let (pods, replicasets): (Api<Pod>, Api<ReplicaSet>) = match namespace {
        Some(ns) => (Api::namespaced(kube.client.clone(), ns), Api::namespaced(kube.client.clone(), ns)),
        None => (Api::all(kube.client.clone()), Api::all(kube.client.clone())),
    };
    let pods = pods.list(&ListParams::default()).await.map_err(|e| kube.error("listing pods", e))?;
    let mut report = UnhealthyPodsReport { checked: pods.items.len(), ..UnhealthyPodsReport::default() };
    let bad: Vec<&Pod> = pods.items.iter().filter(|p| !pod_healthy(p)).collect();
    let mut rs_owner: BTreeMap<(String, String), Option<(String, String)>> = BTreeMap::new();
    if bad.iter().any(|p| controller_of(&p.metadata).is_some_and(|(k, _)| k == "ReplicaSet")) {
        let list = replicasets.list(&ListParams::default()).await.map_err(|e| kube.error("listing replicasets", e))?;
        for rs in list.items {
            rs_owner.insert((rs.namespace().unwrap_or_default(), rs.name_any()), controller_of(&rs.metadata));
        }
    }
    let mut restart = BTreeSet::new();
    for pod in bad {
        let ns = pod.namespace().unwrap_or_default();
        let mut chain = Vec::new();
        if let Some((kind, name)) = controller_of(&pod.metadata) {
            chain.push(ObjectRef { kind: kind.clone(), namespace: ns.clone(), name: name.clone() });
            if kind == "ReplicaSet" {
                if let Some(Some((kind, name))) = rs_owner.get(&(ns.clone(), name)) {
                    chain.push(ObjectRef { kind: kind.clone(), namespace: ns.clone(), name: name.clone() });
                }
            }
        }
        let top = chain.last().filter(|o| matches!(o.kind.as_str(), "Deployment" | "DaemonSet" | "StatefulSet")).cloned();
        if let Some(top) = &top {
            restart.insert(top.clone());
        }
        report.unhealthy.push(UnhealthyPod {
            namespace: ns,
            name: pod.name_any(),
            uid: pod.uid().unwrap_or_default(),
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            phase: pod_phase(pod),
            ready: pod_ready(pod),
            restarts: restarts(pod),
            reasons: pod_reasons(pod),
            owner_chain: chain,
            restart: top,
        });
    }
    report.restart = restart.into_iter().collect();
    Ok(report)
}

impl TypedAction for UnhealthyPods {
    const KIND: &'static str = "kube.unhealthy-pods";
    type Params = Self;
    type Output = UnhealthyPodsReport;

    fn params(&self) -> &Self {
        self
    }

    fn summary(&self, report: &UnhealthyPodsReport) -> String {
        let names = report.names();
        format!("{} of {} pods unhealthy{}", names.len(), report.checked, listed(&names))
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<UnhealthyPodsReport, ActionError> {
        let report = ctx
            .guard("listing unhealthy pods", async {
                let kube = self.connection.connect().await?;
                unhealthy_pods(&kube, self.namespace.as_deref()).await
            })
            .await?;
        if self.fail_if_any && !report.unhealthy.is_empty() {
            let names = report.names();
            return Err(ActionError::retryable(format!(
                "{} unhealthy pods: {}; restart their owners: {}",
                names.len(),
                names.join(", "),
                report.restart.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(report)
    }
}

// ---------------------------------------------------------------------------
// kube.rollout-restart

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkloadKind {
    Deployment,
    DaemonSet,
    StatefulSet,
}

impl WorkloadKind {
    /// The kind an owner reference names, if it is one `rollout restart` handles.
    pub fn of(kind: &str) -> Option<Self> {
        match kind {
            "Deployment" => Some(WorkloadKind::Deployment),
            "DaemonSet" => Some(WorkloadKind::DaemonSet),
            "StatefulSet" => Some(WorkloadKind::StatefulSet),
            _ => None,
        }
    }
}

/// `kubectl rollout restart` and `kubectl rollout status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RolloutRestart {
    #[serde(flatten)]
    pub connection: KubeConnection,
    pub namespace: String,
    pub workload: WorkloadKind,
    pub name: String,
    /// Wait until the rollout is complete (default true).
    #[serde(default = "default_true")]
    pub wait: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutReport {
    pub workload: ObjectRef,
    pub restarted_at: String,
    pub generation: i64,
    pub desired: i32,
    pub updated: i32,
    pub available: i32,
    pub complete: bool,
    pub waited_ms: u64,
    /// Pods deleted because they were stuck (not Ready at an old revision)
    /// and would have held a StatefulSet's rollout forever.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaced: Vec<String>,
}

/// (complete, desired, updated, available) of a Deployment rollout, as
/// `kubectl rollout status` judges it.
pub fn deployment_rollout(d: &Deployment, generation: i64) -> (bool, i32, i32, i32) {
    let desired = d.spec.replicas.unwrap_or(1);
    let Some(st) = &d.status else { return (false, desired, 0, 0) };
    let observed = st.observed_generation.unwrap_or(0) >= generation;
    let updated = st.updated_replicas.unwrap_or(0);
    let total = st.replicas.unwrap_or(0);
    let available = st.available_replicas.unwrap_or(0);
    (observed && updated >= desired && total <= updated && available >= updated, desired, updated, available)
}

/// (complete, desired, updated, available) of a DaemonSet rollout.
pub fn daemonset_rollout(d: &DaemonSet, generation: i64) -> (bool, i32, i32, i32) {
    let Some(st) = &d.status else { return (false, 0, 0, 0) };
    let observed = st.observed_generation.unwrap_or(0) >= generation;
    let desired = st.desired_number_scheduled;
    let updated = st.updated_number_scheduled.unwrap_or(0);
    let available = st.number_available.unwrap_or(0);
    (observed && updated >= desired && available >= desired, desired, updated, available)
}

/// (complete, desired, updated, available) of a StatefulSet rollout: every
/// replica at the update revision and ready (`kubectl rollout status`).
pub fn statefulset_rollout(s: &StatefulSet, generation: i64) -> (bool, i32, i32, i32) {
    let desired = s.spec.replicas.unwrap_or(1);
    let Some(st) = &s.status else { return (false, desired, 0, 0) };
    let observed = st.observed_generation.unwrap_or(0) >= generation;
    let updated = st.updated_replicas.unwrap_or(0);
    let ready = st.ready_replicas.unwrap_or(0);
    let revision_done = st.update_revision.is_some() && st.update_revision == st.current_revision;
    (observed && updated >= desired && ready >= desired && revision_done, desired, updated, ready)
}

/// A StatefulSet's update revision once the controller has observed
/// `generation` (it names the revision the restart rolls to).
pub fn statefulset_update_revision(s: &StatefulSet, generation: i64) -> Option<String> {
    let st = s.status.as_ref()?;
    (st.observed_generation.unwrap_or(0) >= generation).then(|| st.update_revision.clone()).flatten()
}

/// Deletes the pods owned by `owner_uid` that are not Ready and not at
/// `revision`; returns their names. Their controller re-creates them at the
/// update revision.
async fn replace_stuck_pods(kube: &Kube, namespace: &str, owner_uid: &str, revision: &str) -> Result<Vec<String>, ActionError> {
    let pods: Api<Pod> = Api::namespaced(kube.client.clone(), namespace);
    let list = pods.list(&ListParams::default()).await.map_err(|e| kube.error(&format!("listing pods in {namespace}"), e))?;
    let mut replaced = Vec::new();
    for pod in list.items {
        let owned = pod.owner_references().iter().any(|o| o.controller == Some(true) && o.uid == owner_uid);
        let at_revision = pod.labels().get("controller-revision-hash").is_some_and(|r| r == revision);
        if owned && !at_revision && !pod_ready(&pod) && pod.metadata.deletion_timestamp.is_none() {
            let name = pod.name_any();
            match pods.delete(&name, &DeleteParams::default()).await {
                Ok(_) => replaced.push(name),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(kube.error(&format!("deleting the stuck pod {namespace}/{name}"), e)),
            }
        }
    }
    Ok(replaced)
}

impl RolloutRestart {
    /// Patches the restart annotation into one workload, then (with `wait`)
    /// watches it until `rollout` judges the new generation complete. A
    /// StatefulSet's pods that are stuck (not Ready, at an old revision) are
    /// replaced first: an `OrderedReady` StatefulSet does not roll past a pod
    /// that is not Ready, so `kubectl rollout restart` alone never repairs a
    /// crashing one (Kubernetes' "forced rollback" remedy: delete it).
    /// Returns (generation, complete, desired, updated, available, replaced).
    #[allow(clippy::too_many_arguments)]
    async fn patch_and_wait<K>(
        &self,
        kube: &Kube,
        api: Api<K>,
        patch: &serde_json::Value,
        fields: watcher::Config,
        ctx: &ActionCtx,
        noun: &str,
        units: &str,
        rollout: fn(&K, i64) -> (bool, i32, i32, i32),
        update_revision: Option<fn(&K, i64) -> Option<String>>,
    ) -> Result<(i64, bool, i32, i32, i32, Vec<String>), ActionError>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug + Send + Sync + 'static,
    {
        let target = self.target();
        let patched = api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(|e| kube.error(&format!("restarting {target}"), e))?;
        let generation = patched.meta().generation.unwrap_or(0);
        if !self.wait {
            let (done, desired, updated, available) = rollout(&patched, generation);
            return Ok((generation, done, desired, updated, available, Vec::new()));
        }
        let mut replaced = Vec::new();
        if let Some(update_revision) = update_revision {
            let what = format!("the update revision of {target}");
            let revision = wait_for(kube, api.clone(), (), fields.clone(), ctx, &what, |items| {
                let k = items.iter().find(|k| k.name_any() == self.name).ok_or_else(|| format!("the {noun} is gone"))?;
                update_revision(k, generation).ok_or_else(|| format!("generation {generation} not yet observed"))
            })
            .await?;
            let uid = patched.meta().uid.clone().unwrap_or_default();
            replaced = replace_stuck_pods(kube, &self.namespace, &uid, &revision).await?;
        }
        let what = format!("rollout of {target}");
        let (generation, done, desired, updated, available) = wait_for(kube, api, (), fields, ctx, &what, |items| {
            let Some(k) = items.iter().find(|k| k.name_any() == self.name) else {
                return Err(format!("the {noun} is gone"));
            };
            let (done, desired, updated, available) = rollout(k, generation);
            if done {
                Ok((generation, true, desired, updated, available))
            } else {
                Err(format!("{updated} of {desired} {units} updated, {available} available"))
            }
        })
        .await?;
        Ok((generation, done, desired, updated, available, replaced))
    }

    fn target(&self) -> ObjectRef {
        ObjectRef { kind: format!("{:?}", self.workload), namespace: self.namespace.clone(), name: self.name.clone() }
    }

    async fn restart(&self, kube: &Kube, ctx: &ActionCtx) -> Result<RolloutReport, ActionError> {
        let target = self.target();
        let restarted_at = now_rfc3339();
        let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": restarted_at}}}}});
        let fields = watcher::Config::default().fields(&format!("metadata.name={}", self.name));
        let wait_started = tokio::time::Instant::now();
        let (generation, complete, desired, updated, available, replaced) = match self.workload {
            WorkloadKind::Deployment => {
                let api: Api<Deployment> = Api::namespaced(kube.client.clone(), &self.namespace);
                self.patch_and_wait(kube, api, &patch, fields, ctx, "deployment", "replicas", deployment_rollout, None).await?
            }
            WorkloadKind::DaemonSet => {
                let api: Api<DaemonSet> = Api::namespaced(kube.client.clone(), &self.namespace);
                self.patch_and_wait(kube, api, &patch, fields, ctx, "daemonset", "pods", daemonset_rollout, None).await?
            }
            WorkloadKind::StatefulSet => {
                let api: Api<StatefulSet> = Api::namespaced(kube.client.clone(), &self.namespace);
                let revision: fn(&StatefulSet, i64) -> Option<String> = statefulset_update_revision;
                self.patch_and_wait(kube, api, &patch, fields, ctx, "statefulset", "replicas", statefulset_rollout, Some(revision)).await?
            }
        };
        Ok(RolloutReport {
            workload: target,
            restarted_at,
            generation,
            desired,
            updated,
            available,
            complete,
            waited_ms: elapsed_ms(wait_started),
            replaced,
        })
    }
}

impl TypedAction for RolloutRestart {
    const KIND: &'static str = "kube.rollout-restart";
    type Params = Self;
    type Output = RolloutReport;

    fn params(&self) -> &Self {
        self
    }

    fn summary(&self, report: &RolloutReport) -> String {
        let replaced = match report.replaced.len() {
            0 => String::new(),
            n => format!(" ({n} stuck pod(s) replaced: {})", report.replaced.join(", ")),
        };
        format!(
            "{} restarted{replaced}; {}/{} updated, {} available{}",
            report.workload,
            report.updated,
            report.desired,
            report.available,
            if report.complete { ", rollout complete" } else { "" }
        )
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<RolloutReport, ActionError> {
        ctx.guard(&format!("rollout restart of {}", self.target()), async {
            let kube = self.connection.connect().await?;
            self.restart(&kube, ctx).await
        })
        .await
    }
}

// ---------------------------------------------------------------------------
// kube.restart-workloads

/// Which workloads a `kube.restart-workloads` step restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadSelection {
    /// Every Deployment, DaemonSet and StatefulSet of a namespace, found at run time.
    Namespace { namespace: String },
    /// The owners (`restart`) a `kube.unhealthy-pods` step found, read from its recorded output.
    OwnersFoundBy { step: StepId },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RestartWorkloadsParams {
    #[serde(flatten)]
    pub connection: KubeConnection,
    pub select: WorkloadSelection,
}

/// `kubectl rollout restart` of a set of workloads decided at run time, each
/// waited on; the ones to restart come from the cluster (a namespace) or from
/// the output of an earlier step (the unhealthy pods' owners), never from a
/// pattern on names.
#[derive(Clone, Debug)]
pub struct RestartWorkloads {
    params: RestartWorkloadsParams,
    owners_from: Option<StepHandle<UnhealthyPodsReport>>,
}

/// What a `kube.restart-workloads` step did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartWorkloadsReport {
    pub restarted: Vec<RolloutReport>,
    /// Unhealthy pods without an owner that can be restarted (bare pods, Jobs): left alone, named.
    pub not_restartable: Vec<String>,
}

impl RestartWorkloads {
    /// Every Deployment, DaemonSet and StatefulSet of `namespace`.
    pub fn in_namespace(connection: KubeConnection, namespace: &str) -> Self {
        let select = WorkloadSelection::Namespace { namespace: namespace.to_owned() };
        RestartWorkloads { params: RestartWorkloadsParams { connection, select }, owners_from: None }
    }

    /// The owners of the pods a `kube.unhealthy-pods` step found.
    pub fn owners_found_by(connection: KubeConnection, unhealthy: &StepHandle<UnhealthyPodsReport>) -> Self {
        let select = WorkloadSelection::OwnersFoundBy { step: unhealthy.id().clone() };
        RestartWorkloads { params: RestartWorkloadsParams { connection, select }, owners_from: Some(unhealthy.clone()) }
    }

    async fn targets(&self, kube: &Kube, ctx: &ActionCtx) -> Result<(Vec<ObjectRef>, Vec<String>), ActionError> {
        match (&self.params.select, &self.owners_from) {
            (WorkloadSelection::OwnersFoundBy { .. }, Some(from)) => {
                let report = ctx.input(from)?;
                let bare = report.unhealthy.iter().filter(|p| p.restart.is_none()).map(|p| format!("{}/{}", p.namespace, p.name)).collect();
                Ok((report.restart, bare))
            }
            (WorkloadSelection::OwnersFoundBy { step }, None) => {
                Err(ActionError::permanent(format!("restart-workloads has no handle on step {step}: build it with owners_found_by")))
            }
            (WorkloadSelection::Namespace { namespace }, _) => {
                let lp = ListParams::default();
                let mut targets = Vec::new();
                let name = |kind: &str, n: String| ObjectRef { kind: kind.to_owned(), namespace: namespace.clone(), name: n };
                let deployments: Api<Deployment> = Api::namespaced(kube.client.clone(), namespace);
                let list = deployments.list(&lp).await.map_err(|e| kube.error(&format!("listing deployments in {namespace}"), e))?;
                targets.extend(list.items.into_iter().map(|d| name("Deployment", d.name_any())));
                let daemonsets: Api<DaemonSet> = Api::namespaced(kube.client.clone(), namespace);
                let list = daemonsets.list(&lp).await.map_err(|e| kube.error(&format!("listing daemonsets in {namespace}"), e))?;
                targets.extend(list.items.into_iter().map(|d| name("DaemonSet", d.name_any())));
                let statefulsets: Api<StatefulSet> = Api::namespaced(kube.client.clone(), namespace);
                match statefulsets.list(&lp).await {
                    Ok(list) => targets.extend(list.items.into_iter().map(|s| name("StatefulSet", s.name_any()))),
                    // A cluster without the StatefulSet API has none to restart.
                    Err(e) if super::status_code(&e) == Some(404) => {}
                    Err(e) => return Err(kube.error(&format!("listing statefulsets in {namespace}"), e)),
                }
                if targets.is_empty() {
                    return Err(ActionError::retryable(format!("namespace {namespace} has no Deployment, DaemonSet or StatefulSet to restart")));
                }
                Ok((targets, Vec::new()))
            }
        }
    }
}

impl TypedAction for RestartWorkloads {
    const KIND: &'static str = "kube.restart-workloads";
    type Params = RestartWorkloadsParams;
    type Output = RestartWorkloadsReport;

    fn params(&self) -> &RestartWorkloadsParams {
        &self.params
    }

    fn summary(&self, report: &RestartWorkloadsReport) -> String {
        let restarted: Vec<String> = report.restarted.iter().map(|r| r.workload.to_string()).collect();
        let mut summary = if restarted.is_empty() { "nothing to restart".to_owned() } else { format!("restarted {}", listed(&restarted)) };
        if !report.not_restartable.is_empty() {
            summary.push_str(&format!("; no owner to restart for {}", listed(&report.not_restartable)));
        }
        summary
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<RestartWorkloadsReport, ActionError> {
        ctx.guard("the restart of the workloads", async {
            let kube = self.params.connection.connect().await?;
            let (targets, not_restartable) = self.targets(&kube, ctx).await?;
            let mut report = RestartWorkloadsReport { restarted: Vec::new(), not_restartable };
            for target in targets {
                let Some(workload) = WorkloadKind::of(&target.kind) else {
                    report.not_restartable.push(target.to_string());
                    continue;
                };
                let one = RolloutRestart {
                    connection: self.params.connection.clone(),
                    namespace: target.namespace.clone(),
                    workload,
                    name: target.name.clone(),
                    wait: true,
                };
                report.restarted.push(one.restart(&kube, ctx).await?);
            }
            Ok(report)
        })
        .await
    }
}

// ---------------------------------------------------------------------------
// kube.delete-pods

/// `kubectl delete pods -n NS [-l SELECTOR]`, then wait until the selected
/// pods are Ready again (their controllers replace them).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeletePods {
    #[serde(flatten)]
    pub connection: KubeConnection,
    pub namespace: String,
    /// A label selector (`app=web`); every pod of the namespace when absent.
    #[serde(default)]
    pub selector: Option<String>,
    /// Wait until the selected pods are Ready again (default true).
    #[serde(default = "default_true")]
    pub wait: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletePodsReport {
    pub namespace: String,
    pub selector: Option<String>,
    pub deleted: Vec<String>,
    /// Ready pods that replaced them.
    pub ready: Vec<String>,
    pub waited_ms: u64,
}

impl DeletePods {
    async fn delete(&self, kube: &Kube, ctx: &ActionCtx) -> Result<DeletePodsReport, ActionError> {
        let api: Api<Pod> = Api::namespaced(kube.client.clone(), &self.namespace);
        let mut list = ListParams::default();
        let mut watch = watcher::Config::default();
        if let Some(selector) = &self.selector {
            list = list.labels(selector);
            watch = watch.labels(selector);
        }
        let where_ = format!("namespace {}{}", self.namespace, self.selector.as_ref().map(|s| format!(" ({s})")).unwrap_or_default());
        let pods = api.list(&list).await.map_err(|e| kube.error(&format!("listing pods of {where_}"), e))?;
        let mut deleted = Vec::new();
        let mut old_uids = BTreeSet::new();
        let mut replaced = 0usize;
        for pod in &pods.items {
            let name = pod.name_any();
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if super::status_code(&e) == Some(404) => {}
                Err(e) => return Err(kube.error(&format!("deleting pod {name} of {where_}"), e)),
            }
            old_uids.insert(pod.uid().unwrap_or_default());
            if controller_of(&pod.metadata).is_some() {
                replaced += 1;
            }
            deleted.push(name);
        }
        let started = tokio::time::Instant::now();
        let mut ready = Vec::new();
        if self.wait && replaced > 0 {
            ready = wait_for(kube, api, (), watch, ctx, &format!("pods of {where_} Ready again"), |items: &[Arc<Pod>]| {
                let old: Vec<String> =
                    items.iter().filter(|p| old_uids.contains(&p.uid().unwrap_or_default())).map(|p| p.name_any()).collect();
                let new: Vec<&Arc<Pod>> = items.iter().filter(|p| !old_uids.contains(&p.uid().unwrap_or_default())).collect();
                let unready: Vec<String> = new.iter().filter(|p| !pod_healthy(p)).map(|p| p.name_any()).collect();
                if old.is_empty() && unready.is_empty() && new.len() >= replaced {
                    Ok(new.iter().map(|p| p.name_any()).collect())
                } else {
                    Err(format!(
                        "{} of {replaced} replacements present, still terminating: [{}], not ready: [{}]",
                        new.len(),
                        old.join(", "),
                        unready.join(", ")
                    ))
                }
            })
            .await?;
        }
        Ok(DeletePodsReport {
            namespace: self.namespace.clone(),
            selector: self.selector.clone(),
            deleted,
            ready,
            waited_ms: elapsed_ms(started),
        })
    }
}

impl TypedAction for DeletePods {
    const KIND: &'static str = "kube.delete-pods";
    type Params = Self;
    type Output = DeletePodsReport;

    fn params(&self) -> &Self {
        self
    }

    fn summary(&self, report: &DeletePodsReport) -> String {
        format!("{} pods of namespace {} deleted; {} Ready again", report.deleted.len(), report.namespace, report.ready.len())
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<DeletePodsReport, ActionError> {
        ctx.guard(&format!("deleting the pods of namespace {}", self.namespace), async {
            let kube = self.connection.connect().await?;
            self.delete(&kube, ctx).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(generation: i64, status: serde_json::Value) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "generation": generation},
            "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_deployment_rollout_is_complete_only_when_observed_updated_and_available() {
        let check = |status| deployment_rollout(&deployment(3, status), 3).0;
        assert!(check(serde_json::json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2})));
        assert!(!check(serde_json::json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2})), "not observed");
        assert!(!check(serde_json::json!({"observedGeneration": 3, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 3})), "old replica left");
        assert!(!check(serde_json::json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 2})), "not updated");
        assert!(!check(serde_json::json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1})), "not available");
    }

    #[test]
    fn a_crash_looping_pod_is_unhealthy_though_running_and_says_why() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc", "uid": "u", "controller": true}]},
            "status": {"phase": "Running",
                       "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
                       "containerStatuses": [{"name": "web", "image": "nginx", "imageID": "", "ready": false, "restartCount": 4,
                                              "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}
        }))
        .unwrap();
        assert!(!pod_healthy(&pod));
        assert_eq!(pod_reasons(&pod), ["not ready: ContainersNotReady", "web: CrashLoopBackOff"]);
        assert_eq!(restarts(&pod), 4);
        assert_eq!(controller_of(&pod.metadata), Some(("ReplicaSet".to_owned(), "web-abc".to_owned())));
        let done: Pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "job"}, "status": {"phase": "Succeeded"}})).unwrap();
        assert!(pod_healthy(&done));
    }
}
