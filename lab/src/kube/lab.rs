//! The lab control API (`/lab/v1/...`): kubelet states, kubeadm
//! join/reset/init, terraform re-creation, cluster wipe, platform deploy,
//! Kubernetes-side faults, and the health summary the ingress stand-in
//! follows. Owns those effects; refuses anything node-side (ssh, etcd).

use serde_json::{json, Value};
use tokio::time::Instant;

use super::controllers::{argocd_ready, deployment_complete, node_ready, pod_ready};
use super::resources as r;
use super::seed::{self, ARGOCD_NS, DEFAULT_CRASH};
use super::store::{meta, short_hash, ApiError};
use super::{KubeletState, PodCrash, World};

fn template_hash(world: &World, rt: &r::ResourceType, ns: &str, name: &str) -> Result<String, ApiError> {
    let obj = world.store.get(rt, ns, name).ok_or_else(|| ApiError::not_found(rt, name))?;
    Ok(short_hash(&obj.pointer("/spec/template").cloned().unwrap_or(json!({}))))
}

fn set_kubelet(world: &mut World, node: &str, state: &str) -> Result<Value, ApiError> {
    let delay = world.delay(world.opts.node_ready_delay);
    let sim = world.sim.nodes.get_mut(node).ok_or_else(|| ApiError::new(404, "NotFound", format!("lab node {node:?} not found")))?;
    let mut ignored = false;
    match state {
        "running" => {
            if sim.kubelet == KubeletState::Dead {
                ignored = true;
            } else if sim.kubelet != KubeletState::Running {
                sim.kubelet = KubeletState::Running;
                sim.ready_at = Instant::now() + delay;
            }
        }
        "stopped" => {
            if sim.kubelet != KubeletState::Dead {
                sim.kubelet = KubeletState::Stopped;
            }
        }
        "dead" => sim.kubelet = KubeletState::Dead,
        other => return Err(ApiError::bad_request(format!("unknown kubelet state {other:?} (running, stopped, dead)"))),
    }
    Ok(json!({"node": node, "kubelet": kubelet_name(sim.kubelet), "ignored": ignored}))
}

fn kubelet_name(k: KubeletState) -> &'static str {
    match k {
        KubeletState::Running => "running",
        KubeletState::Stopped => "stopped",
        KubeletState::Dead => "dead",
    }
}

fn require_api(world: &World) -> Result<(), ApiError> {
    if world.sim.api_up {
        Ok(())
    } else {
        Err(ApiError::new(503, "ServiceUnavailable", "the control plane is down (run kubeadm init)"))
    }
}

/// Whether a control route reads or writes the cluster's objects (and so needs etcd): all but
/// health, kubelet states, re-creation and wipe, which act on the machines.
pub fn needs_etcd(route: &str) -> bool {
    let segs: Vec<&str> = route.split('/').collect();
    !matches!(segs.as_slice(), ["health"] | ["nodes", _, "kubelet" | "recreate"] | ["cluster", "wipe"] | ["faults", "worker-down" | "worker-dead" | "clear"])
}

/// Apply one control action; `path` is what follows `/lab/v1/`.
pub fn control(world: &mut World, path: &str, body: &Value) -> Result<Value, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let body_str = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
    match segs.as_slice() {
        ["nodes", node, "kubelet"] => {
            let state = body_str("state").ok_or_else(|| ApiError::bad_request("body needs \"state\""))?;
            set_kubelet(world, node, &state)
        }
        ["nodes", node, "join"] => {
            require_api(world)?;
            seed::join(world, node).map_err(|m| ApiError::new(409, "Conflict", m))?;
            Ok(json!({"node": node, "joined": true}))
        }
        ["nodes", node, "reset"] => {
            let sim = world.sim.nodes.get_mut(*node).ok_or_else(|| ApiError::new(404, "NotFound", format!("lab node {node:?} not found")))?;
            sim.joined = false;
            let _ = world.store.delete(&r::NODES, "", node);
            for p in world.store.list(&r::PODS, None) {
                if p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(*node) {
                    let _ = world.store.delete(&r::PODS, &meta(&p, "namespace"), &meta(&p, "name"));
                }
            }
            Ok(json!({"node": node, "joined": false}))
        }
        ["nodes", node, "recreate"] => {
            let sim = world.sim.nodes.get_mut(*node).ok_or_else(|| ApiError::new(404, "NotFound", format!("lab node {node:?} not found")))?;
            sim.kubelet = KubeletState::Stopped;
            sim.joined = false;
            Ok(json!({"node": node, "kubelet": "stopped", "joined": false}))
        }
        ["cluster", "init"] => {
            let cp = world.sim.nodes.iter().find(|(_, n)| n.control_plane).map(|(k, n)| (k.clone(), n.kubelet));
            if let Some((name, KubeletState::Dead)) = cp {
                return Err(ApiError::new(409, "Conflict", format!("control-plane node {name:?} is dead; re-create it first")));
            }
            seed::cluster_init(world);
            Ok(json!({"initialized": true}))
        }
        ["cluster", "wipe"] => {
            world.store.wipe();
            for n in world.sim.nodes.values_mut() {
                n.joined = false;
            }
            world.sim.pods.clear();
            world.sim.syncs.clear();
            world.sim.faults = Default::default();
            world.sim.api_up = false;
            Ok(json!({"wiped": true}))
        }
        ["cluster", "state"] => {
            require_api(world)?;
            restore_state(world, body)
        }
        ["platform", "deploy"] => {
            require_api(world)?;
            seed::platform_deploy(world);
            Ok(json!({"deployed": true}))
        }
        ["components", name] => {
            require_api(world)?;
            let healthy = body.get("healthy").and_then(Value::as_bool).unwrap_or(true);
            let message = body_str("message").unwrap_or_else(|| if healthy { "ok".into() } else { "unhealthy".into() });
            let cond = if healthy {
                json!({"type": "Healthy", "status": "True", "message": message})
            } else {
                json!({"type": "Healthy", "status": "False", "message": "", "error": message})
            };
            world
                .store
                .modify(&r::COMPONENTSTATUSES, "", name, |o| o["conditions"] = json!([cond]))
                .ok_or_else(|| ApiError::not_found(&r::COMPONENTSTATUSES, name))?;
            Ok(json!({"component": name, "healthy": healthy}))
        }
        ["faults", name] => {
            require_api(world)?;
            fault(world, name, body)
        }
        _ => Err(ApiError::new(404, "NotFound", format!("no lab route /lab/v1/{path}"))),
    }
}

fn fault(world: &mut World, name: &str, body: &Value) -> Result<Value, ApiError> {
    match name {
        "pod-crash" => {
            // {"namespace", "workload"} (a Deployment, else a StatefulSet of that name);
            // "deployment" is the older spelling of "workload".
            let ns = body.get("namespace").and_then(Value::as_str).unwrap_or(DEFAULT_CRASH.0).to_string();
            let wanted = body.get("workload").or_else(|| body.get("deployment")).and_then(Value::as_str).unwrap_or(DEFAULT_CRASH.1).to_string();
            let workload = [r::DEPLOYMENTS, r::STATEFULSETS]
                .into_iter()
                .find(|rt| world.store.get(rt, &ns, &wanted).is_some())
                .ok_or_else(|| ApiError::new(404, "NotFound", format!("no deployment or statefulset {ns}/{wanted} to break")))?;
            let hash = template_hash(world, &workload, &ns, &wanted)?;
            let repair = if workload == r::STATEFULSETS {
                format!("kubectl delete pod -n {ns} -l controller-revision-hash={wanted}-{hash} (an OrderedReady rollout does not pass a pod that is not Ready)")
            } else {
                format!("kubectl rollout restart deployment/{wanted} -n {ns}")
            };
            world.sim.faults.pod_crash = Some(PodCrash { namespace: ns.clone(), workload, name: wanted.clone(), hash });
            Ok(json!({"fault": name, "namespace": ns, "workload": format!("{}/{wanted}", workload.singular), "repair": repair}))
        }
        "network" => {
            let coredns = template_hash(world, &r::DEPLOYMENTS, "kube-system", "coredns")?;
            let kube_proxy = template_hash(world, &r::DAEMONSETS, "kube-system", "kube-proxy")?;
            world.sim.faults.network = Some((Some(coredns), Some(kube_proxy)));
            Ok(json!({"fault": name, "repair": "rollout restart daemonset/kube-proxy and deployment/coredns in kube-system"}))
        }
        "argocd-down" => {
            let uids: Vec<String> = world.store.list(&r::PODS, Some(ARGOCD_NS)).iter().map(|p| meta(p, "uid")).collect();
            if uids.is_empty() {
                return Err(ApiError::new(409, "Conflict", "no argocd pods to break (deploy the platform first)"));
            }
            world.sim.faults.argocd_down.extend(uids.iter().cloned());
            Ok(json!({"fault": name, "pods": uids.len(), "repair": "kubectl delete pods -n argocd --all"}))
        }
        "worker-down" | "worker-dead" => {
            let node = body.get("node").and_then(Value::as_str).unwrap_or("k8s-worker-1").to_string();
            let state = if name == "worker-down" { "stopped" } else { "dead" };
            set_kubelet(world, &node, state)
        }
        "clear" => {
            world.sim.faults = Default::default();
            Ok(json!({"fault": "clear"}))
        }
        other => Err(ApiError::new(404, "NotFound", format!("unknown kubernetes fault {other:?}"))),
    }
}

/// What etcd would hold for the simulated cluster: every object but events
/// (`GET /lab/v1/cluster/state`). Store it with an etcd snapshot; POST it back after the
/// snapshot is restored.
pub fn state(world: &World) -> Value {
    let objects: Vec<Value> = world
        .store
        .dump()
        .into_iter()
        .filter(|(t, _)| *t != r::EVENTS.key())
        .map(|(t, o)| json!({"type": t, "object": o}))
        .collect();
    json!({"kind": "DrLabClusterState", "resourceVersion": world.store.resource_version().to_string(), "objects": objects})
}

/// `POST /lab/v1/cluster/state`: the cluster's objects become exactly those of the state (as after
/// an etcd snapshot restore); controllers then reconcile pods, nodes and apps from there.
fn restore_state(world: &mut World, body: &Value) -> Result<Value, ApiError> {
    let objects = body.get("objects").and_then(Value::as_array).ok_or_else(|| ApiError::bad_request("body needs \"objects\""))?;
    let objects: Vec<(String, Value)> = objects
        .iter()
        .map(|entry| (entry.get("type").and_then(Value::as_str).unwrap_or_default().to_string(), entry["object"].clone()))
        .collect();
    let restored = replace_objects(world, objects);
    Ok(json!({"restored": restored}))
}

/// The cluster's objects (events aside) become exactly `objects` (type key, object): what an etcd
/// holds after a snapshot restore. Objects held as they are stay untouched; the simulated pods and
/// syncs start over when anything changed. Returns how many objects were put back.
pub(crate) fn replace_objects(world: &mut World, objects: Vec<(String, Value)>) -> usize {
    let before = world.store.resource_version();
    let wanted: std::collections::HashSet<(String, String, String)> =
        objects.iter().map(|(t, o)| (t.clone(), meta(o, "namespace"), meta(o, "name"))).collect();
    for (t, o) in world.store.dump() {
        if t != r::EVENTS.key() && !wanted.contains(&(t.clone(), meta(&o, "namespace"), meta(&o, "name"))) {
            world.store.remove(&t, &meta(&o, "namespace"), &meta(&o, "name"));
        }
    }
    let mut restored = 0;
    for (t, o) in objects {
        if r::ALL.iter().any(|rt| rt.key() == t) {
            world.store.restore(&t, o);
            restored += 1;
        }
    }
    if world.store.resource_version() != before {
        world.sim.pods.clear();
        world.sim.syncs.clear();
    }
    restored
}

/// The health summary (`GET /lab/v1/health`).
pub fn health(world: &World) -> Value {
    let api_up = world.sim.api_up;
    let mut nodes = Vec::new();
    let mut nodes_ready = true;
    for (name, sim) in &world.sim.nodes {
        let obj = world.store.get(&r::NODES, "", name);
        let ready = obj.is_some_and(node_ready);
        nodes_ready &= ready;
        nodes.push(json!({
            "name": name, "ip": sim.ip, "joined": sim.joined, "kubelet": kubelet_name(sim.kubelet), "registered": obj.is_some(),
            "ready": ready,
            "unschedulable": obj.and_then(|o| o.pointer("/spec/unschedulable")).and_then(Value::as_bool).unwrap_or(false),
        }));
    }
    let kube_system_ready = {
        let pods = world.store.list(&r::PODS, Some("kube-system"));
        let dns = world.store.get(&r::DEPLOYMENTS, "kube-system", "coredns");
        let dns_ok = dns.is_some_and(deployment_complete);
        dns_ok && !pods.is_empty() && pods.iter().all(pod_ready)
    };
    let argocd = argocd_ready(world);
    let apps: Vec<Value> = world
        .store
        .list(&r::APPLICATIONS, Some(ARGOCD_NS))
        .iter()
        .map(|a| {
            json!({"name": meta(a, "name"),
                   "sync": a.pointer("/status/sync/status").cloned().unwrap_or(json!("Unknown")),
                   "health": a.pointer("/status/health/status").cloned().unwrap_or(json!("Unknown"))})
        })
        .collect();
    let apps_healthy = !apps.is_empty() && apps.iter().all(|a| a["sync"] == "Synced" && a["health"] == "Healthy");
    let unready_pods: Vec<String> = world
        .store
        .list(&r::PODS, None)
        .iter()
        .filter(|p| !pod_ready(p))
        .map(|p| format!("{}/{}", meta(p, "namespace"), meta(p, "name")))
        .collect();
    let f = &world.sim.faults;
    let faults = json!({
        "pod-crash": f.pod_crash.as_ref().map(|c| format!("{}/{}", c.namespace, c.name)),
        "network": f.network.as_ref().map(|(c, k)| json!({"coredns_restarted": c.is_none(), "kube_proxy_restarted": k.is_none()})),
        "argocd-down": !f.argocd_down.is_empty(),
    });
    let etcd = match &world.sim.etcd_error {
        None => json!({"healthy": true}),
        Some(error) => json!({"healthy": false, "error": error}),
    };
    let etcd_ok = world.sim.etcd_error.is_none();
    json!({
        "healthy": api_up && etcd_ok && nodes_ready && kube_system_ready && argocd && apps_healthy,
        "etcd": etcd,
        "api_up": api_up, "nodes_ready": nodes_ready, "kube_system_ready": kube_system_ready, "argocd_ready": argocd,
        "apps_healthy": apps_healthy, "nodes": nodes, "apps": apps, "unready_pods": unready_pods, "faults": faults,
        "resource_version": world.store.resource_version().to_string(),
    })
}
