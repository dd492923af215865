//! `kube.drain-check`: whether a node can be drained now, answered before
//! anything is cordoned — the drill's capacity and PodDisruptionBudget check.
//!
//! * Capacity: every pod the drain would evict (all but DaemonSet-owned,
//!   mirror and finished pods) is placed, largest request first, on the other
//!   nodes that would take it (Ready, schedulable, taints tolerated,
//!   `nodeSelector` matched), against what each has left: allocatable minus the
//!   requests of the pods already there, CPU, memory and pod count. A pod that
//!   fits nowhere is a problem: after the drain it would stay Pending.
//! * Budgets: a PodDisruptionBudget that covers a pod of the node and allows
//!   no disruption now would hold the drain until its deadline; that is a
//!   problem too. One that allows fewer disruptions than it has pods on the
//!   node only makes the drain wait for replacements, and is reported as such.
//!
//! The check reads only; a run with problems fails (permanently: waiting does
//! not add a node) with every problem named.

use std::collections::BTreeMap;

use dr_orchestrator::{ActionCtx, ActionError, TypedAction};
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde::{Deserialize, Serialize};

use super::nodes::node_ready;
use super::pods::controller_of;
use super::{Kube, KubeConnection};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DrainCheck {
    #[serde(flatten)]
    pub connection: KubeConnection,
    /// The node to be drained.
    pub node: String,
}

/// CPU (millicores), memory (bytes) and a pod count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Room {
    pub cpu_millis: i64,
    pub memory_bytes: i64,
    pub pods: i64,
}

impl Room {
    fn fits(&self, need: &Room) -> bool {
        self.cpu_millis >= need.cpu_millis && self.memory_bytes >= need.memory_bytes && self.pods >= need.pods
    }

    fn take(&mut self, need: &Room) {
        self.cpu_millis -= need.cpu_millis;
        self.memory_bytes -= need.memory_bytes;
        self.pods -= need.pods;
    }

    fn add(&mut self, more: &Room) {
        self.cpu_millis += more.cpu_millis;
        self.memory_bytes += more.memory_bytes;
        self.pods += more.pods;
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// `namespace/name` of the pod the drain would evict.
    pub pod: String,
    pub requests: Room,
    /// Where it would fit (None: nowhere).
    pub node: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetCheck {
    /// `namespace/name` of the PodDisruptionBudget.
    pub budget: String,
    pub disruptions_allowed: i32,
    pub current_healthy: i32,
    pub desired_healthy: i32,
    /// Its pods on the drained node.
    pub pods_on_node: usize,
    /// It allows no disruption now: the drain would wait on it until its deadline.
    pub blocks: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainCheckReport {
    pub node: String,
    /// What the evicted pods request together.
    pub needed: Room,
    /// What the nodes that would take them have left, before the drain.
    pub free: BTreeMap<String, Room>,
    pub placements: Vec<Placement>,
    pub budgets: Vec<BudgetCheck>,
    /// Why the drain should not go ahead now (empty: it can).
    pub problems: Vec<String>,
    /// What the drain will meet that is not a problem (a budget that makes it wait).
    pub notes: Vec<String>,
}

impl TypedAction for DrainCheck {
    const KIND: &'static str = "kube.drain-check";
    type Params = Self;
    type Output = DrainCheckReport;

    fn params(&self) -> &Self {
        self
    }

    fn summary(&self, report: &DrainCheckReport) -> String {
        let placed = report.placements.iter().filter(|p| p.node.is_some()).count();
        let mut text = format!(
            "{}: {placed}/{} pod(s) fit on {} ({}m CPU, {} MiB requested); {} budget(s) checked",
            report.node,
            report.placements.len(),
            if report.free.is_empty() { "no other node".to_owned() } else { report.free.keys().cloned().collect::<Vec<_>>().join(", ") },
            report.needed.cpu_millis,
            report.needed.memory_bytes / (1 << 20),
            report.budgets.len(),
        );
        if !report.problems.is_empty() {
            text.push_str(&format!("; problems: {}", report.problems.join("; ")));
        }
        text
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<DrainCheckReport, ActionError> {
        let report = ctx
            .guard(&format!("the drain check of {}", self.node), async {
                let kube = self.connection.connect().await?;
                self.check(&kube).await
            })
            .await?;
        if report.problems.is_empty() {
            Ok(report)
        } else {
            Err(ActionError::permanent(format!("{} cannot be drained now: {}", self.node, report.problems.join("; "))))
        }
    }
}

impl DrainCheck {
    async fn check(&self, kube: &Kube) -> Result<DrainCheckReport, ActionError> {
        let nodes: Api<Node> = Api::all(kube.client.clone());
        let pods: Api<Pod> = Api::all(kube.client.clone());
        let pdbs: Api<PodDisruptionBudget> = Api::all(kube.client.clone());
        let nodes = nodes.list(&ListParams::default()).await.map_err(|e| kube.error("listing nodes", e))?.items;
        let pods = pods.list(&ListParams::default()).await.map_err(|e| kube.error("listing pods", e))?.items;
        let pdbs = pdbs.list(&ListParams::default()).await.map_err(|e| kube.error("listing pod disruption budgets", e))?.items;
        if !nodes.iter().any(|n| n.name_any() == self.node) {
            return Err(ActionError::permanent(format!("no node {} in the cluster", self.node)));
        }
        Ok(plan(&self.node, &nodes, &pods, &pdbs))
    }
}

/// The drain check of `node` over a snapshot of the cluster (pure).
pub fn plan(node: &str, nodes: &[Node], pods: &[Pod], pdbs: &[PodDisruptionBudget]) -> DrainCheckReport {
    let mut report = DrainCheckReport { node: node.to_owned(), ..DrainCheckReport::default() };
    let running = |p: &&Pod| !matches!(super::pods::pod_phase(p).as_str(), "Succeeded" | "Failed");
    let node_of = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
    let evicted: Vec<&Pod> = pods
        .iter()
        .filter(running)
        .filter(|p| node_of(p) == node)
        .filter(|p| !p.annotations().contains_key("kubernetes.io/config.mirror"))
        .filter(|p| controller_of(&p.metadata).is_none_or(|(kind, _)| kind != "DaemonSet"))
        .collect();

    // What each other node that takes pods has left.
    let mut targets: Vec<(&Node, Room)> = nodes
        .iter()
        .filter(|n| n.name_any() != node)
        .filter(|n| node_ready(n).0)
        .filter(|n| n.spec.as_ref().and_then(|s| s.unschedulable) != Some(true))
        .map(|n| {
            let mut free = allocatable(n);
            for p in pods.iter().filter(running).filter(|p| node_of(p) == n.name_any()) {
                free.take(&requests(p));
            }
            (n, free)
        })
        .collect();
    report.free = targets.iter().map(|(n, free)| (n.name_any(), *free)).collect();

    // Largest first, each on the first node it fits (first-fit decreasing).
    let mut demands: Vec<(&Pod, Room)> = evicted.iter().map(|p| (*p, requests(p))).collect();
    demands.sort_by_key(|(p, r)| (std::cmp::Reverse((r.cpu_millis, r.memory_bytes)), key(p)));
    for (pod, need) in demands {
        report.needed.add(&need);
        let slot = targets.iter_mut().find(|(n, free)| free.fits(&need) && admits(n, pod));
        let placed = slot.map(|(n, free)| {
            free.take(&need);
            n.name_any()
        });
        if placed.is_none() {
            report.problems.push(format!(
                "{} ({}m CPU, {} MiB) fits on no other node: it would stay Pending",
                key(pod),
                need.cpu_millis,
                need.memory_bytes / (1 << 20)
            ));
        }
        report.placements.push(Placement { pod: key(pod), requests: need, node: placed });
    }
    if !evicted.is_empty() && report.free.is_empty() {
        report.problems.push(format!("no other node is Ready and schedulable to take {node}'s pods"));
    }

    // Budgets covering the evicted pods.
    for pdb in pdbs {
        let ns = pdb.namespace().unwrap_or_default();
        let Some(selector) = pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) else { continue };
        let covered = evicted.iter().filter(|p| p.namespace().unwrap_or_default() == ns && selects(selector, p.labels())).count();
        if covered == 0 {
            continue;
        }
        // A budget its controller has not counted yet allows nothing, as the API server judges it.
        let status = pdb.status.clone().unwrap_or_default();
        let (allowed, current, desired) =
            (status.disruptions_allowed.unwrap_or(0), status.current_healthy.unwrap_or(0), status.desired_healthy.unwrap_or(0));
        let name = format!("{ns}/{}", pdb.name_any());
        let blocks = allowed < 1;
        if blocks {
            report.problems.push(format!(
                "PodDisruptionBudget {name} allows no disruption now ({} healthy, {} required) and covers {covered} pod(s) on {node}: the drain would wait on it until its deadline",
                current, desired
            ));
        } else if (allowed as usize) < covered {
            report.notes.push(format!(
                "PodDisruptionBudget {name} allows {allowed} disruption(s) for {covered} pod(s) on {node}: evictions wait for replacements"
            ));
        }
        report.budgets.push(BudgetCheck {
            budget: name,
            disruptions_allowed: allowed,
            current_healthy: current,
            desired_healthy: desired,
            pods_on_node: covered,
            blocks,
        });
    }
    report
}

fn key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

fn allocatable(node: &Node) -> Room {
    let alloc = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
    let get = |k: &str| alloc.and_then(|a| a.get(k)).map(|q| q.0.as_str());
    Room {
        cpu_millis: get("cpu").and_then(cpu_millis).unwrap_or(0),
        memory_bytes: get("memory").and_then(bytes).unwrap_or(0),
        pods: get("pods").and_then(bytes).unwrap_or(110),
    }
}

/// What a pod requests: the sum of its containers' requests, or its largest
/// init container's if that is more (as the scheduler counts it).
pub fn requests(pod: &Pod) -> Room {
    let Some(spec) = &pod.spec else { return Room { pods: 1, ..Room::default() } };
    let of = |c: &k8s_openapi::api::core::v1::Container| {
        let req = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        let get = |k: &str| req.and_then(|r| r.get(k)).map(|q| q.0.as_str());
        (get("cpu").and_then(cpu_millis).unwrap_or(0), get("memory").and_then(bytes).unwrap_or(0))
    };
    let (mut cpu, mut memory) = spec.containers.iter().map(of).fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
    for init in spec.init_containers.iter().flatten() {
        let (c, m) = of(init);
        cpu = cpu.max(c);
        memory = memory.max(m);
    }
    Room { cpu_millis: cpu, memory_bytes: memory, pods: 1 }
}

/// Whether `node` admits `pod`: its NoSchedule/NoExecute taints tolerated and its
/// `nodeSelector` matched.
fn admits(node: &Node, pod: &Pod) -> bool {
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
    let taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let tainted_out = taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .any(|t| !tolerations.iter().any(|tol| tolerates(tol, t)));
    let selector = pod.spec.as_ref().and_then(|s| s.node_selector.clone()).unwrap_or_default();
    let labels = node.labels();
    !tainted_out && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect_ok = toleration.effect.as_deref().is_none_or(|e| e.is_empty() || e == taint.effect);
    let key_ok = match toleration.operator.as_deref() {
        Some("Exists") => toleration.key.as_deref().is_none_or(|k| k.is_empty() || k == taint.key),
        _ => toleration.key.as_deref() == Some(taint.key.as_str()) && toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
    };
    effect_ok && key_ok
}

/// Whether a label selector (matchLabels and matchExpressions) selects `labels`.
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    by_labels && by_expressions
}

/// A CPU quantity in millicores: `250m`, `0.5`, `2`.
pub fn cpu_millis(q: &str) -> Option<i64> {
    let q = q.trim();
    if let Some(m) = q.strip_suffix('m') {
        return m.parse::<f64>().ok().map(|v| v.ceil() as i64);
    }
    let (number, scale) = split_suffix(q)?;
    Some((number * scale * 1000.0).ceil() as i64)
}

/// A quantity in plain units (bytes, a count): `128Mi`, `1G`, `3923436Ki`, `1e3`, `110`.
pub fn bytes(q: &str) -> Option<i64> {
    let (number, scale) = split_suffix(q.trim())?;
    Some((number * scale).ceil() as i64)
}

fn split_suffix(q: &str) -> Option<(f64, f64)> {
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("m", 1e-3),
    ];
    for (suffix, scale) in SUFFIXES {
        if let Some(number) = q.strip_suffix(suffix) {
            return number.parse::<f64>().ok().filter(|n| n.is_finite() && *n >= 0.0).map(|n| (n, *scale));
        }
    }
    // Plain or exponent form (1e3, 1E3).
    q.parse::<f64>().ok().filter(|n| n.is_finite() && *n >= 0.0).map(|n| (n, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cpu: &str, memory: &str, extra: serde_json::Value) -> Node {
        let mut n = json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {},
            "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}
        });
        merge(&mut n, extra);
        serde_json::from_value(n).unwrap()
    }

    fn pod(ns: &str, name: &str, on: &str, cpu: &str, memory: &str, owner: &str, labels: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name, "labels": labels,
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner, "name": "x", "uid": "u", "controller": true}]},
            "spec": {"nodeName": on, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": memory}}}]},
            "status": {"phase": "Running"}
        }))
        .unwrap()
    }

    fn pdb(ns: &str, name: &str, app: &str, allowed: i32) -> PodDisruptionBudget {
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": app}}},
            "status": {"disruptionsAllowed": allowed, "currentHealthy": 2, "desiredHealthy": 2 - allowed, "expectedPods": 2}
        }))
        .unwrap()
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        if let (Some(a), serde_json::Value::Object(b)) = (a.as_object_mut(), b) {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        a.insert(k, v);
                    }
                }
            }
        }
    }

    #[test]
    fn quantities_parse_as_kubernetes_writes_them() {
        assert_eq!(cpu_millis("250m"), Some(250));
        assert_eq!(cpu_millis("0.5"), Some(500));
        assert_eq!(cpu_millis("2"), Some(2000));
        assert_eq!(bytes("128Mi"), Some(128 << 20));
        assert_eq!(bytes("3923436Ki"), Some(3_923_436 * 1024));
        assert_eq!(bytes("1G"), Some(1_000_000_000));
        assert_eq!(bytes("1e3"), Some(1000));
        assert_eq!(bytes("110"), Some(110));
        assert_eq!(bytes("lots"), None);
        assert_eq!(bytes("-1Mi"), None);
    }

    #[test]
    fn pods_that_fit_on_the_other_workers_pass() {
        let nodes = [
            node("w1", "2", "4Gi", json!({})),
            node("w2", "2", "4Gi", json!({})),
            node("cp", "2", "4Gi", json!({"spec": {"taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]}})),
        ];
        let pods = [
            pod("demo", "web-1", "w1", "500m", "512Mi", "ReplicaSet", json!({"app": "web"})),
            pod("demo", "api-1", "w1", "1", "1Gi", "ReplicaSet", json!({"app": "api"})),
            pod("kube-system", "proxy-1", "w1", "100m", "64Mi", "DaemonSet", json!({})),
            pod("demo", "web-2", "w2", "500m", "512Mi", "ReplicaSet", json!({"app": "web"})),
        ];
        let report = plan("w1", &nodes, &pods, &[pdb("demo", "web", "web", 1)]);
        assert!(report.problems.is_empty(), "{report:?}");
        assert_eq!(report.placements.len(), 2, "the DaemonSet pod stays: {report:?}");
        assert!(report.placements.iter().all(|p| p.node.as_deref() == Some("w2")), "the tainted control plane takes none: {report:?}");
        assert_eq!(report.needed, Room { cpu_millis: 1500, memory_bytes: 1536 << 20, pods: 2 });
        assert_eq!(report.free["w2"].cpu_millis, 1500);
        assert_eq!(report.budgets.len(), 1);
        assert!(!report.budgets[0].blocks);
    }

    #[test]
    fn too_little_room_and_a_budget_that_allows_nothing_are_problems() {
        let nodes = [node("w1", "2", "4Gi", json!({})), node("w2", "1", "4Gi", json!({}))];
        let pods = [
            pod("demo", "big", "w1", "1500m", "1Gi", "StatefulSet", json!({"app": "db"})),
            pod("demo", "web-1", "w1", "100m", "64Mi", "ReplicaSet", json!({"app": "web"})),
        ];
        let report = plan("w1", &nodes, &pods, &[pdb("demo", "web", "web", 0)]);
        assert_eq!(report.problems.len(), 2, "{report:?}");
        assert!(report.problems[0].contains("demo/big") && report.problems[0].contains("Pending"), "{report:?}");
        assert!(report.problems[1].contains("demo/web") && report.problems[1].contains("no disruption"), "{report:?}");
        assert_eq!(report.placements.iter().find(|p| p.pod == "demo/web-1").unwrap().node.as_deref(), Some("w2"));
    }

    #[test]
    fn a_cordoned_or_unready_other_node_takes_nothing() {
        let nodes = [
            node("w1", "2", "4Gi", json!({})),
            node("w2", "2", "4Gi", json!({"spec": {"unschedulable": true}})),
            node("w3", "2", "4Gi", json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}})),
        ];
        let pods = [pod("demo", "web-1", "w1", "100m", "64Mi", "ReplicaSet", json!({"app": "web"}))];
        let report = plan("w1", &nodes, &pods, &[]);
        assert!(report.free.is_empty(), "{report:?}");
        assert!(report.problems.iter().any(|p| p.contains("no other node")), "{report:?}");
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let labels: BTreeMap<String, String> = [("app".to_owned(), "web".to_owned()), ("tier".to_owned(), "front".to_owned())].into();
        let sel = |v: serde_json::Value| -> LabelSelector { serde_json::from_value(v).unwrap() };
        assert!(selects(&sel(json!({"matchLabels": {"app": "web"}})), &labels));
        assert!(!selects(&sel(json!({"matchLabels": {"app": "api"}})), &labels));
        assert!(selects(&sel(json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "back"]}]})), &labels));
        assert!(!selects(&sel(json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]})), &labels));
        assert!(selects(&sel(json!({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]})), &labels));
    }
}
