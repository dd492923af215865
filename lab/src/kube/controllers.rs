//! The controllers of the simulated cluster, run as one reconcile pass over
//! the whole world under its lock: garbage collection, node lifecycle,
//! deployments → replicasets → pods, daemonsets, statefulsets, scheduler, kubelet (pod
//! status, faults), endpoints, PDB status, ArgoCD applications. Owns behaviour
//! only; objects live in the store.

use std::collections::HashMap;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::resources::{self as r, ResourceType};
use super::seed::{self, ARGOCD_COMPONENTS, ARGOCD_NS};
use super::select::{map_selector_matches, selector_object_matches};
use super::store::{labels, meta, now_rfc3339, short_hash, suffix};
use super::{KubeletState, Shared, SimPod, World};

/// Run the controllers until the task is aborted.
pub async fn run(shared: Shared) {
    loop {
        let wait = {
            // Controllers act through the API: while etcd cannot be reached they wait, and what
            // they change is written to etcd before the next pass.
            let mut io = shared.persist.begin().await;
            match io.ensure(&shared).await {
                Err(_) => shared.lock().opts.tick,
                Ok(()) => {
                    let wait = {
                        let mut world = shared.lock();
                        world.sim.next_wake = None;
                        reconcile(&mut world);
                        let idle = world.opts.tick;
                        let now = Instant::now();
                        world.sim.next_wake.map_or(idle, |at| at.saturating_duration_since(now).min(idle)).max(std::time::Duration::from_millis(1))
                    };
                    let _ = io.flush(&shared).await;
                    wait
                }
            }
        };
        tokio::select! {
            () = shared.changed.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Reconcile until nothing changes (bounded).
pub fn settle(world: &mut World) {
    for _ in 0..100 {
        let before = world.store.resource_version();
        reconcile(world);
        if world.store.resource_version() == before {
            return;
        }
    }
}

/// One pass of every controller.
pub fn reconcile(world: &mut World) {
    if !world.sim.api_up {
        return;
    }
    let now = Instant::now();
    garbage_collect(world);
    nodes(world, now);
    deployments(world);
    replicasets(world);
    daemonsets(world);
    statefulsets(world);
    schedule(world);
    kubelet(world, now);
    endpoints(world);
    pdbs(world);
    applications(world, now);
    clear_repaired_faults(world);
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

fn int_at(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

/// uid of the controller owner.
pub fn owner_uid(obj: &Value) -> Option<String> {
    obj.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
        .and_then(|o| o.get("uid"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn condition_true(obj: &Value, kind: &str) -> bool {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == kind && c["status"] == "True"))
}

pub fn pod_ready(pod: &Value) -> bool {
    condition_true(pod, "Ready")
}

pub fn node_ready(node: &Value) -> bool {
    condition_true(node, "Ready")
}

/// Whether a deployment's rollout is complete, as `kubectl rollout status` judges it: the
/// spec is observed, every replica is updated and available, and no old replica is left.
pub fn deployment_complete(d: &Value) -> bool {
    let want = d.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
    int_at(d, "/status/observedGeneration") >= int_at(d, "/metadata/generation")
        && int_at(d, "/status/updatedReplicas") == want
        && int_at(d, "/status/replicas") == want
        && int_at(d, "/status/availableReplicas") >= want
}

/// Whether a StatefulSet's rollout is complete, as `kubectl rollout status` judges it: the
/// spec is observed, every replica is Ready and at the update revision.
pub fn statefulset_complete(s: &Value) -> bool {
    let want = s.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
    int_at(s, "/status/observedGeneration") >= int_at(s, "/metadata/generation")
        && int_at(s, "/status/readyReplicas") >= want
        && int_at(s, "/status/updatedReplicas") >= want
        && !str_at(s, "/status/updateRevision").is_empty()
        && str_at(s, "/status/updateRevision") == str_at(s, "/status/currentRevision")
}

pub fn pod_crashlooping(pod: &Value) -> bool {
    pod.pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| str_at(c, "/state/waiting/reason") == "CrashLoopBackOff"))
}

/// Set a condition, keeping its lastTransitionTime when the status did not change.
fn set_condition(conditions: &mut Vec<Value>, mut cond: Value, time_fields: &[&str]) {
    let now = now_rfc3339();
    let kind = cond["type"].clone();
    if let Some(old) = conditions.iter_mut().find(|c| c["type"] == kind) {
        let same = old["status"] == cond["status"];
        for f in time_fields {
            cond[*f] = if same && old.get(*f).is_some() { old[*f].clone() } else { json!(now) };
        }
        *old = cond;
    } else {
        for f in time_fields {
            cond[*f] = json!(now);
        }
        conditions.push(cond);
    }
}

fn conditions_of(obj: &Value) -> Vec<Value> {
    obj.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default()
}

fn owner_ref(rt: &ResourceType, owner: &Value) -> Value {
    json!({"apiVersion": rt.api_version(), "kind": rt.kind, "name": meta(owner, "name"), "uid": meta(owner, "uid"),
           "controller": true, "blockOwnerDeletion": true})
}

pub(crate) fn event(world: &mut World, involved: &Value, kind: &str, reason: &str, message: &str, component: &str) {
    let ns = {
        let n = meta(involved, "namespace");
        if n.is_empty() {
            "default".to_string()
        } else {
            n
        }
    };
    if world.store.get(&r::NAMESPACES, "", &ns).is_none() {
        return;
    }
    let now = now_rfc3339();
    // Like the kubelet's event aggregation: the same reason on the same object bumps a count.
    let uid = meta(involved, "uid");
    let existing = world.store.list(&r::EVENTS, Some(&ns)).into_iter().find(|e| {
        e.pointer("/involvedObject/uid").and_then(Value::as_str) == Some(uid.as_str())
            && e.get("reason").and_then(Value::as_str) == Some(reason)
            && e.get("message").and_then(Value::as_str) == Some(message)
    });
    if let Some(e) = existing {
        world.store.modify(&r::EVENTS, &ns, &meta(&e, "name"), |e| {
            e["count"] = json!(e["count"].as_i64().unwrap_or(1) + 1);
            e["lastTimestamp"] = json!(now);
        });
        return;
    }
    let name = format!("{}.{:x}", meta(involved, "name"), world.store.next_counter() * 7919 + 0x1_8000_0000);
    let _ = world.store.create(
        &r::EVENTS,
        &ns,
        json!({
            "metadata": {"name": name},
            "involvedObject": {"apiVersion": involved["apiVersion"], "kind": involved["kind"], "name": meta(involved, "name"),
                               "namespace": meta(involved, "namespace"), "uid": meta(involved, "uid"),
                               "resourceVersion": meta(involved, "resourceVersion")},
            "reason": reason, "message": message, "type": kind, "count": 1,
            "firstTimestamp": now, "lastTimestamp": now, "eventTime": null,
            "source": {"component": component}, "reportingComponent": component, "reportingInstance": ""
        }),
    );
}

fn garbage_collect(world: &mut World) {
    let uids = world.store.all_uids();
    for rt in [r::REPLICASETS, r::PODS] {
        for obj in world.store.list(&rt, None) {
            let refs = obj.pointer("/metadata/ownerReferences").and_then(Value::as_array).cloned().unwrap_or_default();
            if !refs.is_empty() && refs.iter().all(|o| !uids.contains(o["uid"].as_str().unwrap_or_default())) {
                let _ = world.store.delete(&rt, &meta(&obj, "namespace"), &meta(&obj, "name"));
            }
        }
    }
}

fn nodes(world: &mut World, now: Instant) {
    let sim_nodes = world.sim.nodes.clone();
    for (name, sn) in sim_nodes {
        if world.store.get(&r::NODES, "", &name).is_none() {
            // A running, joined kubelet registers its Node again.
            if sn.joined && sn.kubelet == KubeletState::Running {
                let _ = seed::join(world, &name);
            }
            continue;
        }
        if sn.joined && sn.kubelet == KubeletState::Running && sn.ready_at > now {
            world.wake_at(sn.ready_at);
        }
        let (status, reason, message) = match (sn.joined, sn.kubelet) {
            (true, KubeletState::Running) if now >= sn.ready_at => ("True", "KubeletReady", "kubelet is posting ready status"),
            (true, KubeletState::Running) => {
                ("False", "KubeletNotReady", "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady")
            }
            _ => ("Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status."),
        };
        let before = world.store.get(&r::NODES, "", &name).cloned().unwrap_or(Value::Null);
        let was_ready = node_ready(&before);
        let updated = world.store.modify(&r::NODES, "", &name, |node| {
            let mut conds = conditions_of(node);
            set_condition(
                &mut conds,
                json!({"type": "Ready", "status": status, "reason": reason, "message": message}),
                &["lastHeartbeatTime", "lastTransitionTime"],
            );
            if status != "True" {
                for c in conds.iter_mut().filter(|c| c["type"] != "Ready") {
                    if c["status"] != "Unknown" {
                        c["status"] = json!("Unknown");
                        c["reason"] = json!("NodeStatusUnknown");
                        c["message"] = json!("Kubelet stopped posting node status.");
                    }
                }
            } else {
                for c in conds.iter_mut().filter(|c| c["type"] != "Ready") {
                    if c["status"] != "False" {
                        c["status"] = json!("False");
                        c["reason"] = json!("KubeletHasSufficientResources");
                        c["message"] = json!("kubelet has no pressure");
                    }
                }
            }
            node["status"]["conditions"] = json!(conds);
            let mut taints: Vec<Value> = node
                .pointer("/spec/taints")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|t| t["key"] != "node.kubernetes.io/unreachable" && t["key"] != "node.kubernetes.io/not-ready")
                .collect();
            let lifecycle_key = match status {
                "False" => Some("node.kubernetes.io/not-ready"),
                "Unknown" => Some("node.kubernetes.io/unreachable"),
                _ => None,
            };
            if let Some(key) = lifecycle_key {
                taints.push(json!({"key": key, "effect": "NoSchedule"}));
                taints.push(json!({"key": key, "effect": "NoExecute"}));
            }
            node["spec"]["taints"] = json!(taints);
        });
        if let Some(node) = updated {
            if was_ready && !node_ready(&node) {
                let msg = format!("Node {name} status is now: NodeNotReady");
                event(world, &node, "Normal", "NodeNotReady", &msg, "node-controller");
            }
        }
    }
}

fn deployments(world: &mut World) {
    for d in world.store.list(&r::DEPLOYMENTS, None) {
        let ns = meta(&d, "namespace");
        let name = meta(&d, "name");
        let uid = meta(&d, "uid");
        let template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let hash = short_hash(&template);
        let replicas = d.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
        let owned: Vec<Value> =
            world.store.list(&r::REPLICASETS, Some(&ns)).into_iter().filter(|rs| owner_uid(rs).as_deref() == Some(&uid)).collect();
        let is_new = |rs: &Value| str_at(rs, "/metadata/labels/pod-template-hash") == hash;
        match owned.iter().find(|rs| is_new(rs)) {
            None => {
                let revision = owned
                    .iter()
                    .filter_map(|rs| str_at(rs, "/metadata/annotations/deployment.kubernetes.io~1revision").parse::<i64>().ok())
                    .max()
                    .unwrap_or(0)
                    + 1;
                let mut rs_template = template.clone();
                rs_template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
                let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
                selector["matchLabels"]["pod-template-hash"] = json!(hash);
                let mut rs_labels = rs_template["metadata"]["labels"].clone();
                rs_labels["pod-template-hash"] = json!(hash);
                let rs = json!({
                    "metadata": {"name": format!("{name}-{hash}"), "labels": rs_labels,
                                 "annotations": {"deployment.kubernetes.io/revision": revision.to_string(),
                                                 "deployment.kubernetes.io/desired-replicas": replicas.to_string()},
                                 "ownerReferences": [owner_ref(&r::DEPLOYMENTS, &d)]},
                    "spec": {"replicas": replicas, "selector": selector, "template": rs_template}
                });
                if let Ok(created) = world.store.create(&r::REPLICASETS, &ns, rs) {
                    let msg = format!("Scaled up replica set {} from 0 to {replicas}", meta(&created, "name"));
                    event(world, &d, "Normal", "ScalingReplicaSet", &msg, "deployment-controller");
                }
            }
            Some(new_rs) => {
                if new_rs.pointer("/spec/replicas").and_then(Value::as_i64) != Some(replicas) {
                    world.store.modify(&r::REPLICASETS, &ns, &meta(new_rs, "name"), |rs| rs["spec"]["replicas"] = json!(replicas));
                }
                let new_ready = int_at(new_rs, "/status/readyReplicas");
                if new_ready >= replicas {
                    for old in owned.iter().filter(|rs| !is_new(rs)) {
                        if int_at(old, "/spec/replicas") != 0 {
                            world.store.modify(&r::REPLICASETS, &ns, &meta(old, "name"), |rs| rs["spec"]["replicas"] = json!(0));
                            let msg = format!("Scaled down replica set {} to 0 from {}", meta(old, "name"), int_at(old, "/spec/replicas"));
                            event(world, &d, "Normal", "ScalingReplicaSet", &msg, "deployment-controller");
                        }
                    }
                }
            }
        }
        // Status from the pods of every owned replicaset.
        let owned: Vec<Value> =
            world.store.list(&r::REPLICASETS, Some(&ns)).into_iter().filter(|rs| owner_uid(rs).as_deref() == Some(&uid)).collect();
        let new_uid = owned.iter().find(|rs| is_new(rs)).map(|rs| meta(rs, "uid")).unwrap_or_default();
        let owned_uids: Vec<String> = owned.iter().map(|rs| meta(rs, "uid")).collect();
        let pods: Vec<Value> = world
            .store
            .list(&r::PODS, Some(&ns))
            .into_iter()
            .filter(|p| owner_uid(p).is_some_and(|u| owned_uids.contains(&u)))
            .collect();
        let total = pods.len() as i64;
        let updated = pods.iter().filter(|p| owner_uid(p).as_deref() == Some(new_uid.as_str())).count() as i64;
        let ready = pods.iter().filter(|p| pod_ready(p)).count() as i64;
        let updated_ready =
            pods.iter().filter(|p| owner_uid(p).as_deref() == Some(new_uid.as_str()) && pod_ready(p)).count() as i64;
        let complete = updated == replicas && total == replicas && updated_ready >= replicas;
        let generation = int_at(&d, "/metadata/generation");
        world.store.modify(&r::DEPLOYMENTS, &ns, &name, |dep| {
            let mut conds = conditions_of(dep);
            let available = ready >= replicas;
            set_condition(
                &mut conds,
                json!({"type": "Available", "status": if available {"True"} else {"False"},
                       "reason": if available {"MinimumReplicasAvailable"} else {"MinimumReplicasUnavailable"},
                       "message": if available {"Deployment has minimum availability."} else {"Deployment does not have minimum availability."}}),
                &["lastUpdateTime", "lastTransitionTime"],
            );
            let rs_name = format!("{name}-{hash}");
            set_condition(
                &mut conds,
                json!({"type": "Progressing", "status": "True",
                       "reason": if complete {"NewReplicaSetAvailable"} else {"ReplicaSetUpdated"},
                       "message": if complete {format!("ReplicaSet \"{rs_name}\" has successfully progressed.")} else {format!("ReplicaSet \"{rs_name}\" is progressing.")}}),
                &["lastUpdateTime", "lastTransitionTime"],
            );
            dep["status"] = json!({
                "observedGeneration": generation, "replicas": total, "updatedReplicas": updated, "readyReplicas": ready,
                "availableReplicas": ready, "unavailableReplicas": (replicas - ready).max(0), "conditions": conds
            });
        });
    }
}

fn new_pod(world: &mut World, ns: &str, base: &str, template: &Value, owner: Value, node: Option<&str>, extra_labels: &[(&str, &str)]) {
    let name = format!("{base}-{}", suffix(world.store.next_counter()));
    let mut metadata = template.get("metadata").cloned().unwrap_or(json!({}));
    metadata["name"] = json!(name);
    metadata["ownerReferences"] = json!([owner]);
    for (k, v) in extra_labels {
        metadata["labels"][*k] = json!(v);
    }
    let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
    if spec.get("restartPolicy").is_none() {
        spec["restartPolicy"] = json!("Always");
    }
    if spec.get("schedulerName").is_none() {
        spec["schedulerName"] = json!("default-scheduler");
    }
    let mut status = json!({"phase": "Pending", "qosClass": "BestEffort"});
    if let Some(node) = node {
        spec["nodeName"] = json!(node);
        status["conditions"] = json!([{"type": "PodScheduled", "status": "True", "lastTransitionTime": now_rfc3339()}]);
    }
    let _ = world.store.create(&r::PODS, ns, json!({"metadata": metadata, "spec": spec, "status": status}));
}

fn replicasets(world: &mut World) {
    for rs in world.store.list(&r::REPLICASETS, None) {
        let ns = meta(&rs, "namespace");
        let name = meta(&rs, "name");
        let uid = meta(&rs, "uid");
        let want = rs.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1).max(0) as usize;
        let mut pods: Vec<Value> =
            world.store.list(&r::PODS, Some(&ns)).into_iter().filter(|p| owner_uid(p).as_deref() == Some(&uid)).collect();
        let template = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
        if pods.len() < want {
            for _ in pods.len()..want {
                new_pod(world, &ns, &name, &template, owner_ref(&r::REPLICASETS, &rs), None, &[]);
            }
            let msg = format!("Created pod(s) for {name}");
            event(world, &rs, "Normal", "SuccessfulCreate", &msg, "replicaset-controller");
        } else if pods.len() > want {
            // Delete unscheduled, then unready, then newest pods first.
            pods.sort_by_key(|p| {
                (
                    p.pointer("/spec/nodeName").is_some(),
                    pod_ready(p),
                    std::cmp::Reverse(meta(p, "resourceVersion").parse::<u64>().unwrap_or(0)),
                )
            });
            for p in pods.iter().take(pods.len() - want) {
                let _ = world.store.delete(&r::PODS, &ns, &meta(p, "name"));
                let msg = format!("Deleted pod: {}", meta(p, "name"));
                event(world, &rs, "Normal", "SuccessfulDelete", &msg, "replicaset-controller");
            }
        }
        let pods: Vec<Value> =
            world.store.list(&r::PODS, Some(&ns)).into_iter().filter(|p| owner_uid(p).as_deref() == Some(&uid)).collect();
        let ready = pods.iter().filter(|p| pod_ready(p)).count();
        let generation = int_at(&rs, "/metadata/generation");
        world.store.modify(&r::REPLICASETS, &ns, &name, |o| {
            o["status"] = json!({"replicas": pods.len(), "fullyLabeledReplicas": pods.len(), "readyReplicas": ready,
                                 "availableReplicas": ready, "observedGeneration": generation});
        });
    }
}

fn daemonsets(world: &mut World) {
    let nodes: Vec<String> = world.store.list(&r::NODES, None).iter().map(|n| meta(n, "name")).collect();
    for ds in world.store.list(&r::DAEMONSETS, None) {
        let ns = meta(&ds, "namespace");
        let name = meta(&ds, "name");
        let uid = meta(&ds, "uid");
        let template = ds.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let hash = short_hash(&template);
        let pods: Vec<Value> =
            world.store.list(&r::PODS, Some(&ns)).into_iter().filter(|p| owner_uid(p).as_deref() == Some(&uid)).collect();
        for p in &pods {
            let node = str_at(p, "/spec/nodeName");
            if !nodes.iter().any(|n| n == node) || str_at(p, "/metadata/labels/controller-revision-hash") != hash {
                let _ = world.store.delete(&r::PODS, &ns, &meta(p, "name"));
            }
        }
        let pods: Vec<Value> =
            world.store.list(&r::PODS, Some(&ns)).into_iter().filter(|p| owner_uid(p).as_deref() == Some(&uid)).collect();
        for node in &nodes {
            if !pods.iter().any(|p| str_at(p, "/spec/nodeName") == node) {
                new_pod(world, &ns, &name, &template, owner_ref(&r::DAEMONSETS, &ds), Some(node), &[("controller-revision-hash", &hash)]);
                let msg = format!("Created pod on node {node}");
                event(world, &ds, "Normal", "SuccessfulCreate", &msg, "daemonset-controller");
            }
        }
        let pods: Vec<Value> =
            world.store.list(&r::PODS, Some(&ns)).into_iter().filter(|p| owner_uid(p).as_deref() == Some(&uid)).collect();
        let ready = pods.iter().filter(|p| pod_ready(p)).count();
        let generation = int_at(&ds, "/metadata/generation");
        world.store.modify(&r::DAEMONSETS, &ns, &name, |o| {
            o["status"] = json!({"desiredNumberScheduled": nodes.len(), "currentNumberScheduled": pods.len(), "numberReady": ready,
                                 "numberAvailable": ready, "numberUnavailable": nodes.len().saturating_sub(ready),
                                 "updatedNumberScheduled": pods.len(), "numberMisscheduled": 0, "observedGeneration": generation});
        });
    }
}

/// The update revision of a StatefulSet's template, as its pods' `controller-revision-hash`.
pub fn statefulset_revision(sts: &Value) -> String {
    format!("{}-{}", meta(sts, "name"), short_hash(&sts.pointer("/spec/template").cloned().unwrap_or(json!({}))))
}

/// The StatefulSet controller, `OrderedReady` with the `RollingUpdate` strategy: pods
/// `NAME-0..N-1` with stable names, each created only when every lower ordinal is Ready;
/// excess ordinals removed from the highest down; on a template change, one pod at a time
/// (the highest ordinal not yet at the update revision) is deleted and re-created at the new
/// revision, only while every pod is Ready. `currentRevision` becomes the update revision
/// once every replica runs it — what `kubectl rollout status statefulset` waits for.
fn statefulsets(world: &mut World) {
    for sts in world.store.list(&r::STATEFULSETS, None) {
        let ns = meta(&sts, "namespace");
        let name = meta(&sts, "name");
        let uid = meta(&sts, "uid");
        let template = sts.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let update_revision = statefulset_revision(&sts);
        let replicas = sts.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1).max(0);
        let owned = |world: &World| -> Vec<Value> {
            world.store.list(&r::PODS, Some(&ns)).into_iter().filter(|p| owner_uid(p).as_deref() == Some(&uid)).collect()
        };
        let ordinal = |p: &Value| meta(p, "name").strip_prefix(&format!("{name}-")).and_then(|o| o.parse::<i64>().ok());
        let pods = owned(world);
        // Scale down, highest ordinal first, one at a time.
        if let Some(extra) = pods.iter().filter(|p| ordinal(p).is_none_or(|o| o >= replicas)).max_by_key(|p| ordinal(p)) {
            let pod_name = meta(extra, "name");
            let _ = world.store.delete(&r::PODS, &ns, &pod_name);
            event(world, &sts, "Normal", "SuccessfulDelete", &format!("delete Pod {pod_name} in StatefulSet {name} successful"), "statefulset-controller");
        } else {
            // Create the lowest missing ordinal once every lower one is Ready.
            let mut all_ready = true;
            for i in 0..replicas {
                let pod_name = format!("{name}-{i}");
                match pods.iter().find(|p| meta(p, "name") == pod_name) {
                    Some(p) if pod_ready(p) => continue,
                    Some(_) => all_ready = false,
                    None => {
                        let owner = owner_ref(&r::STATEFULSETS, &sts);
                        new_stateful_pod(world, &ns, &pod_name, i, &template, owner, &update_revision, &sts);
                        event(world, &sts, "Normal", "SuccessfulCreate", &format!("create Pod {pod_name} in StatefulSet {name} successful"), "statefulset-controller");
                        all_ready = false;
                    }
                }
                break;
            }
            // Roll the highest ordinal still at an old revision, one pod at a time.
            if all_ready {
                let stale = pods
                    .iter()
                    .filter(|p| ordinal(p).is_some_and(|o| o < replicas))
                    .filter(|p| str_at(p, "/metadata/labels/controller-revision-hash") != update_revision)
                    .max_by_key(|p| ordinal(p));
                if let Some(stale) = stale {
                    let pod_name = meta(stale, "name");
                    let _ = world.store.delete(&r::PODS, &ns, &pod_name);
                    event(world, &sts, "Normal", "SuccessfulDelete", &format!("delete Pod {pod_name} in StatefulSet {name} successful"), "statefulset-controller");
                }
            }
        }
        let pods = owned(world);
        let at_update = pods.iter().filter(|p| str_at(p, "/metadata/labels/controller-revision-hash") == update_revision).count() as i64;
        let ready = pods.iter().filter(|p| pod_ready(p)).count() as i64;
        let previous_current = str_at(&sts, "/status/currentRevision").to_string();
        let current_revision = if previous_current.is_empty() || (at_update == replicas && pods.len() as i64 == replicas) {
            update_revision.clone()
        } else {
            previous_current
        };
        let current = pods.iter().filter(|p| str_at(p, "/metadata/labels/controller-revision-hash") == current_revision).count() as i64;
        let generation = int_at(&sts, "/metadata/generation");
        world.store.modify(&r::STATEFULSETS, &ns, &name, |o| {
            o["status"] = json!({"observedGeneration": generation, "replicas": pods.len(), "readyReplicas": ready,
                                 "availableReplicas": ready, "currentReplicas": current, "updatedReplicas": at_update,
                                 "currentRevision": current_revision, "updateRevision": update_revision,
                                 "collisionCount": 0});
        });
    }
}

#[allow(clippy::too_many_arguments)]
fn new_stateful_pod(world: &mut World, ns: &str, pod_name: &str, index: i64, template: &Value, owner: Value, revision: &str, sts: &Value) {
    let mut metadata = template.get("metadata").cloned().unwrap_or(json!({}));
    metadata["name"] = json!(pod_name);
    metadata["ownerReferences"] = json!([owner]);
    metadata["labels"]["controller-revision-hash"] = json!(revision);
    metadata["labels"]["statefulset.kubernetes.io/pod-name"] = json!(pod_name);
    metadata["labels"]["apps.kubernetes.io/pod-index"] = json!(index.to_string());
    let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
    if spec.get("restartPolicy").is_none() {
        spec["restartPolicy"] = json!("Always");
    }
    if spec.get("schedulerName").is_none() {
        spec["schedulerName"] = json!("default-scheduler");
    }
    spec["hostname"] = json!(pod_name);
    if let Some(service) = sts.pointer("/spec/serviceName").and_then(Value::as_str) {
        spec["subdomain"] = json!(service);
    }
    let status = json!({"phase": "Pending", "qosClass": "BestEffort"});
    let _ = world.store.create(&r::PODS, ns, json!({"metadata": metadata, "spec": spec, "status": status}));
}

fn tolerates(pod: &Value, taint: &Value) -> bool {
    let tolerations = pod.pointer("/spec/tolerations").and_then(Value::as_array).cloned().unwrap_or_default();
    tolerations.iter().any(|t| {
        let effect_ok = str_at(t, "/effect").is_empty() || t["effect"] == taint["effect"];
        let key_ok = match str_at(t, "/operator") {
            "Exists" => str_at(t, "/key").is_empty() || t["key"] == taint["key"],
            _ => t["key"] == taint["key"] && str_at(t, "/value") == str_at(taint, "/value"),
        };
        effect_ok && key_ok
    })
}

fn schedule(world: &mut World) {
    let nodes = world.store.list(&r::NODES, None);
    let pods = world.store.list(&r::PODS, None);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for p in &pods {
        *counts.entry(str_at(p, "/spec/nodeName").to_string()).or_default() += 1;
    }
    for p in pods.iter().filter(|p| str_at(p, "/spec/nodeName").is_empty()) {
        let candidates: Vec<&Value> = nodes
            .iter()
            .filter(|n| node_ready(n) && n.pointer("/spec/unschedulable").and_then(Value::as_bool) != Some(true))
            .filter(|n| {
                n.pointer("/spec/taints").and_then(Value::as_array).is_none_or(|ts| {
                    ts.iter().filter(|t| t["effect"] == "NoSchedule" || t["effect"] == "NoExecute").all(|t| tolerates(p, t))
                })
            })
            .collect();
        let ns = meta(p, "namespace");
        let name = meta(p, "name");
        let Some(best) = candidates.iter().min_by_key(|n| (counts.get(&meta(n, "name")).copied().unwrap_or(0), meta(n, "name"))) else {
            let msg = format!("0/{} nodes are available: no node is Ready and schedulable.", nodes.len());
            world.store.modify(&r::PODS, &ns, &name, |pod| {
                pod["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                                      "message": msg, "lastTransitionTime": now_rfc3339()}]);
            });
            continue;
        };
        let node = meta(best, "name");
        *counts.entry(node.clone()).or_default() += 1;
        if let Some(pod) = world.store.modify(&r::PODS, &ns, &name, |pod| {
            pod["spec"]["nodeName"] = json!(node);
            pod["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "True", "lastTransitionTime": now_rfc3339()}]);
        }) {
            let msg = format!("Successfully assigned {ns}/{name} to {node}");
            event(world, &pod, "Normal", "Scheduled", &msg, "default-scheduler");
        }
    }
}

enum Health {
    Ok,
    Crash(&'static str),
    Unready(&'static str),
}

fn pod_health(world: &World, pod: &Value) -> Health {
    let ns = meta(pod, "namespace");
    let f = &world.sim.faults;
    if f.argocd_down.contains(&meta(pod, "uid")) {
        return Health::Crash("argocd: failed to connect to redis: dial tcp: connection refused");
    }
    if f.pod_crash.as_ref().is_some_and(|c| c.hits(pod)) {
        return Health::Crash("panic: runtime error: invalid memory address or nil pointer dereference");
    }
    if let Some((coredns, kube_proxy)) = &f.network {
        if ns == "kube-system" {
            let app = str_at(pod, "/metadata/labels/k8s-app");
            if app == "kube-proxy" && kube_proxy.is_some() {
                return Health::Crash("can't set sysctl net/ipv4/conf/all/route_localnet: iptables-restore failed");
            }
            if app == "kube-dns" && (coredns.is_some() || kube_proxy.is_some()) {
                return Health::Unready("Readiness probe failed: HTTP probe failed with statuscode: 503 (plugin/ready: Still waiting on: \"kubernetes\")");
            }
        }
    }
    Health::Ok
}

fn kubelet(world: &mut World, now: Instant) {
    let pod_delay = world.delay(world.opts.pod_ready_delay);
    let backoff = world.opts.crash_backoff;
    for pod in world.store.list(&r::PODS, None) {
        let node_name = str_at(&pod, "/spec/nodeName").to_string();
        if node_name.is_empty() {
            continue;
        }
        let ns = meta(&pod, "namespace");
        let name = meta(&pod, "name");
        let uid = meta(&pod, "uid");
        let Some(node) = world.store.get(&r::NODES, "", &node_name).cloned() else {
            // Pod GC: the node is gone.
            let _ = world.store.delete(&r::PODS, &ns, &name);
            world.sim.pods.remove(&uid);
            continue;
        };
        if !node_ready(&node) {
            world.sim.pods.remove(&uid);
            world.store.modify(&r::PODS, &ns, &name, |p| {
                let mut conds = conditions_of(p);
                for kind in ["Ready", "ContainersReady"] {
                    if conds.iter().any(|c| c["type"] == kind) {
                        set_condition(&mut conds, json!({"type": kind, "status": "False", "reason": "NodeNotReady"}), &["lastTransitionTime"]);
                    }
                }
                p["status"]["conditions"] = json!(conds);
                if let Some(cs) = p.pointer_mut("/status/containerStatuses").and_then(Value::as_array_mut) {
                    for c in cs {
                        c["ready"] = json!(false);
                    }
                }
            });
            continue;
        }
        let sim = world.sim.pods.entry(uid.clone()).or_insert(SimPod { ready_at: now + pod_delay, last_crash: now, warned: false }).clone();
        let health = pod_health(world, &pod);
        let old_restarts = int_at(&pod, "/status/containerStatuses/0/restartCount");
        let mut restarts = old_restarts;
        if let Health::Crash(_) = health {
            if now.duration_since(sim.last_crash) >= backoff {
                restarts += 1;
                if let Some(s) = world.sim.pods.get_mut(&uid) {
                    s.last_crash = now;
                }
            }
        }
        let ready = matches!(health, Health::Ok) && now >= sim.ready_at;
        match health {
            Health::Ok if !ready => world.wake_at(sim.ready_at),
            Health::Crash(_) => {
                let last = world.sim.pods.get(&uid).map_or(now, |s| s.last_crash);
                world.wake_at(last + backoff);
            }
            _ => {}
        }
        let host_network = pod.pointer("/spec/hostNetwork").and_then(Value::as_bool) == Some(true);
        let host_ip = node
            .pointer("/status/addresses")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|x| x["type"] == "InternalIP"))
            .map(|x| str_at(x, "/address").to_string())
            .unwrap_or_default();
        let pod_ip = match str_at(&pod, "/status/podIP") {
            "" if host_network => host_ip.clone(),
            "" => {
                let cidr = str_at(&node, "/spec/podCIDR");
                let third = cidr.split('.').nth(2).unwrap_or("0").to_string();
                format!("10.244.{third}.{}", world.store.next_counter() % 250 + 2)
            }
            ip => ip.to_string(),
        };
        let start_time = match str_at(&pod, "/status/startTime") {
            "" => now_rfc3339(),
            t => t.to_string(),
        };
        let containers = pod.pointer("/spec/containers").and_then(Value::as_array).cloned().unwrap_or_default();
        let statuses: Vec<Value> = containers
            .iter()
            .map(|c| {
                let cname = str_at(c, "/name");
                let image = str_at(c, "/image");
                let mut s = json!({"name": cname, "image": image, "imageID": format!("{image}@sha256:{}", "0".repeat(64)),
                                   "containerID": format!("containerd://{uid}-{cname}"), "ready": ready,
                                   "started": !matches!(health, Health::Crash(_)), "restartCount": restarts});
                match &health {
                    Health::Crash(msg) => {
                        s["state"] = json!({"waiting": {"reason": "CrashLoopBackOff",
                            "message": format!("back-off 10s restarting failed container={cname} pod={name}_{ns}({uid})")}});
                        s["lastState"] = json!({"terminated": {"exitCode": 1, "reason": "Error", "message": msg,
                                                               "startedAt": start_time, "finishedAt": start_time}});
                    }
                    _ => {
                        s["state"] = json!({"running": {"startedAt": start_time}});
                        s["lastState"] = json!({});
                    }
                }
                s
            })
            .collect();
        let updated = world.store.modify(&r::PODS, &ns, &name, |p| {
            let mut conds = conditions_of(p);
            let rs = if ready { "True" } else { "False" };
            set_condition(&mut conds, json!({"type": "PodScheduled", "status": "True"}), &["lastTransitionTime"]);
            set_condition(&mut conds, json!({"type": "PodReadyToStartContainers", "status": "True"}), &["lastTransitionTime"]);
            set_condition(&mut conds, json!({"type": "Initialized", "status": "True"}), &["lastTransitionTime"]);
            let mut ready_cond = json!({"type": "Ready", "status": rs});
            let mut cready_cond = json!({"type": "ContainersReady", "status": rs});
            if !ready {
                ready_cond["reason"] = json!("ContainersNotReady");
                cready_cond["reason"] = json!("ContainersNotReady");
            }
            set_condition(&mut conds, cready_cond, &["lastTransitionTime"]);
            set_condition(&mut conds, ready_cond, &["lastTransitionTime"]);
            p["status"]["phase"] = json!("Running");
            p["status"]["conditions"] = json!(conds);
            p["status"]["hostIP"] = json!(host_ip);
            p["status"]["hostIPs"] = json!([{"ip": host_ip}]);
            p["status"]["podIP"] = json!(pod_ip);
            p["status"]["podIPs"] = json!([{"ip": pod_ip}]);
            p["status"]["startTime"] = json!(start_time);
            p["status"]["containerStatuses"] = json!(statuses);
            p["status"]["qosClass"] = json!("BestEffort");
        });
        if let Some(p) = updated {
            match health {
                Health::Crash(_) if restarts > old_restarts => {
                    let cname = str_at(&p, "/spec/containers/0/name").to_string();
                    let msg = format!("Back-off restarting failed container {cname} in pod {name}_{ns}({uid})");
                    event(world, &p, "Warning", "BackOff", &msg, "kubelet");
                }
                Health::Unready(msg) if !sim.warned => {
                    if let Some(s) = world.sim.pods.get_mut(&uid) {
                        s.warned = true;
                    }
                    let msg = msg.to_string();
                    event(world, &p, "Warning", "Unhealthy", &msg, "kubelet");
                }
                _ => {}
            }
        }
    }
}

fn endpoints(world: &mut World) {
    for svc in world.store.list(&r::SERVICES, None) {
        if svc.pointer("/spec/clusterIP").is_none() && svc.pointer("/spec/type").and_then(Value::as_str) != Some("ExternalName") {
            let n = world.store.next_counter();
            let ip = format!("10.96.{}.{}", (n / 250) % 250 + 1, n % 250 + 2);
            world.store.modify(&r::SERVICES, &meta(&svc, "namespace"), &meta(&svc, "name"), |o| {
                o["spec"]["clusterIP"] = json!(ip);
                o["spec"]["clusterIPs"] = json!([ip]);
            });
        }
        let Some(selector) = svc.pointer("/spec/selector").and_then(Value::as_object).cloned() else {
            continue;
        };
        let ns = meta(&svc, "namespace");
        let name = meta(&svc, "name");
        let mut ready = Vec::new();
        let mut not_ready = Vec::new();
        for p in world.store.list(&r::PODS, Some(&ns)) {
            let ip = str_at(&p, "/status/podIP");
            if ip.is_empty() || !map_selector_matches(&selector, &labels(&p)) {
                continue;
            }
            let addr = json!({"ip": ip, "nodeName": str_at(&p, "/spec/nodeName"),
                              "targetRef": {"kind": "Pod", "namespace": ns, "name": meta(&p, "name"), "uid": meta(&p, "uid")}});
            if pod_ready(&p) {
                ready.push(addr);
            } else {
                not_ready.push(addr);
            }
        }
        let ports: Vec<Value> = svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|p| {
                let port = p.get("targetPort").filter(|t| t.is_number()).or(p.get("port")).cloned().unwrap_or(json!(0));
                json!({"name": p.get("name").cloned().unwrap_or(json!("")), "port": port, "protocol": p.get("protocol").cloned().unwrap_or(json!("TCP"))})
            })
            .collect();
        let mut subset = json!({"ports": ports});
        if !ready.is_empty() {
            subset["addresses"] = json!(ready);
        }
        if !not_ready.is_empty() {
            subset["notReadyAddresses"] = json!(not_ready);
        }
        let subsets = if ready.is_empty() && not_ready.is_empty() { None } else { Some(json!([subset])) };
        if world.store.get(&r::ENDPOINTS, &ns, &name).is_some() {
            world.store.modify(&r::ENDPOINTS, &ns, &name, |ep| match (&subsets, ep.as_object_mut()) {
                (Some(s), _) => ep["subsets"] = s.clone(),
                (None, Some(m)) => {
                    m.remove("subsets");
                }
                (None, None) => {}
            });
        } else {
            let mut ep = json!({"metadata": {"name": name, "labels": labels(&svc)}});
            if let Some(s) = subsets {
                ep["subsets"] = s;
            }
            let _ = world.store.create(&r::ENDPOINTS, &ns, ep);
        }
    }
}

/// (expected pods, currently healthy, desired healthy, disruptions allowed) of a PDB.
pub fn pdb_budget(world: &World, pdb: &Value) -> (i64, i64, i64, i64) {
    let ns = meta(pdb, "namespace");
    let selector = pdb.pointer("/spec/selector").cloned().unwrap_or(json!({}));
    let pods: Vec<Value> =
        world.store.list(&r::PODS, Some(&ns)).into_iter().filter(|p| selector_object_matches(&selector, &labels(p))).collect();
    let expected = pods.len() as i64;
    let healthy = pods.iter().filter(|p| pod_ready(p)).count() as i64;
    let resolve = |v: &Value, round_up: bool| -> Option<i64> {
        match v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => {
                let pct: f64 = s.trim_end_matches('%').parse().ok()?;
                let x = pct * expected as f64 / 100.0;
                Some(if round_up { x.ceil() } else { x.floor() } as i64)
            }
            _ => None,
        }
    };
    let desired = if let Some(min) = pdb.pointer("/spec/minAvailable").and_then(|v| resolve(v, true)) {
        min
    } else if let Some(max) = pdb.pointer("/spec/maxUnavailable").and_then(|v| resolve(v, true)) {
        (expected - max).max(0)
    } else {
        0
    };
    (expected, healthy, desired, (healthy - desired).max(0))
}

fn pdbs(world: &mut World) {
    for pdb in world.store.list(&r::PDBS, None) {
        let (expected, healthy, desired, allowed) = pdb_budget(world, &pdb);
        let generation = int_at(&pdb, "/metadata/generation");
        world.store.modify(&r::PDBS, &meta(&pdb, "namespace"), &meta(&pdb, "name"), |o| {
            let mut conds = conditions_of(o);
            let ok = allowed > 0;
            set_condition(
                &mut conds,
                json!({"type": "DisruptionAllowed", "status": if ok {"True"} else {"False"},
                       "reason": if ok {"SufficientPods"} else {"InsufficientPods"}, "message": "", "observedGeneration": generation}),
                &["lastTransitionTime"],
            );
            o["status"] = json!({"observedGeneration": generation, "expectedPods": expected, "currentHealthy": healthy,
                                 "desiredHealthy": desired, "disruptionsAllowed": allowed, "conditions": conds});
        });
    }
}

/// Whether every ArgoCD component has a Ready pod.
pub fn argocd_ready(world: &World) -> bool {
    let pods = world.store.list(&r::PODS, Some(ARGOCD_NS));
    ARGOCD_COMPONENTS
        .iter()
        .all(|c| pods.iter().any(|p| str_at(p, "/metadata/labels/app.kubernetes.io~1name") == *c && pod_ready(p)))
}

const REVISION: &str = "4f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a39";

fn applications(world: &mut World, now: Instant) {
    if !argocd_ready(world) {
        return;
    }
    let sync_delay = world.delay(world.opts.sync_delay);
    for app in world.store.list(&r::APPLICATIONS, None) {
        let ns = meta(&app, "namespace");
        let name = meta(&app, "name");
        let key = (ns.clone(), name.clone());
        let synced = str_at(&app, "/status/sync/status") == "Synced";
        if app.pointer("/operation/sync").is_none() {
            world.sim.syncs.remove(&key);
            if !synced && app.pointer("/spec/syncPolicy/automated").is_some() {
                world.store.modify(&r::APPLICATIONS, &ns, &name, |a| {
                    a["operation"] = json!({"sync": {"revision": REVISION, "prune": true}, "initiatedBy": {"automated": true},
                                            "retry": {"limit": 5}});
                });
                continue;
            }
        } else {
            match world.sim.syncs.get(&key).copied() {
                None => {
                    world.sim.syncs.insert(key.clone(), now + sync_delay);
                    world.wake_at(now + sync_delay);
                    world.store.modify(&r::APPLICATIONS, &ns, &name, |a| {
                        a["status"]["operationState"] = json!({"operation": a["operation"].clone(), "phase": "Running",
                                                               "message": "one or more tasks are running", "startedAt": now_rfc3339()});
                    });
                    continue;
                }
                Some(done_at) if now >= done_at => {
                    world.sim.syncs.remove(&key);
                    for (rt, mns, obj) in seed::app_manifests(&name) {
                        seed::ensure_namespace(world, &mns);
                        let oname = meta(&obj, "name");
                        if world.store.get(&rt, &mns, &oname).is_none() {
                            let _ = world.store.create(&rt, &mns, obj);
                        }
                    }
                    world.store.modify(&r::APPLICATIONS, &ns, &name, |a| {
                        let finished = now_rfc3339();
                        let started = a.pointer("/status/operationState/startedAt").cloned().unwrap_or(json!(finished));
                        let op = a.get("operation").cloned().unwrap_or(json!({}));
                        let source = a.pointer("/spec/source").cloned().unwrap_or(json!({}));
                        a["status"]["operationState"] = json!({"operation": op, "phase": "Succeeded",
                            "message": "successfully synced (all tasks run)", "startedAt": started, "finishedAt": finished,
                            "syncResult": {"revision": REVISION, "source": source}});
                        a["status"]["sync"] = json!({"status": "Synced", "revision": REVISION,
                                                     "comparedTo": {"source": source, "destination": a.pointer("/spec/destination").cloned().unwrap_or(json!({}))}});
                        a["status"]["reconciledAt"] = json!(finished);
                        if let Some(m) = a.as_object_mut() {
                            m.remove("operation");
                        }
                    });
                }
                Some(done_at) => {
                    world.wake_at(done_at);
                    continue;
                }
            }
        }
        // Health (and drift) of what the app deployed.
        let Some(app) = world.store.get(&r::APPLICATIONS, &ns, &name).cloned() else { continue };
        if str_at(&app, "/status/sync/status") != "Synced" {
            continue;
        }
        let manifests = seed::app_manifests(&name);
        let mut missing = false;
        let mut all_available = true;
        let mut degraded = false;
        for (rt, mns, obj) in &manifests {
            let Some(live) = world.store.get(rt, mns, &meta(obj, "name")).cloned() else {
                missing = true;
                continue;
            };
            if *rt == r::DEPLOYMENTS || *rt == r::STATEFULSETS {
                let complete = if *rt == r::DEPLOYMENTS { deployment_complete(&live) } else { statefulset_complete(&live) };
                if !complete {
                    all_available = false;
                }
                let selector = live.pointer("/spec/selector").cloned().unwrap_or(json!({}));
                if world.store.list(&r::PODS, Some(mns)).iter().any(|p| selector_object_matches(&selector, &labels(p)) && pod_crashlooping(p)) {
                    degraded = true;
                }
            }
        }
        let (sync, health) = if missing {
            ("OutOfSync", "Missing")
        } else if degraded {
            ("Synced", "Degraded")
        } else if all_available {
            ("Synced", "Healthy")
        } else {
            ("Synced", "Progressing")
        };
        world.store.modify(&r::APPLICATIONS, &ns, &name, |a| {
            a["status"]["sync"]["status"] = json!(sync);
            a["status"]["health"] = json!({"status": health});
        });
    }
}

fn clear_repaired_faults(world: &mut World) {
    let template_hash = |world: &World, rt: &ResourceType, ns: &str, name: &str| {
        world.store.get(rt, ns, name).map(|o| short_hash(&o.pointer("/spec/template").cloned().unwrap_or(json!({}))))
    };
    // A crash is repaired once the template changed and no pod of the broken one is left
    // (a StatefulSet keeps a stuck pod at the old revision until it is deleted).
    if let Some(c) = world.sim.faults.pod_crash.clone() {
        if template_hash(world, &c.workload, &c.namespace, &c.name).as_deref() != Some(c.hash.as_str())
            && !world.store.list(&r::PODS, Some(&c.namespace)).iter().any(|p| c.hits(p))
        {
            world.sim.faults.pod_crash = None;
        }
    }
    if let Some((coredns, kube_proxy)) = world.sim.faults.network.clone() {
        let coredns = coredns.filter(|h| template_hash(world, &r::DEPLOYMENTS, "kube-system", "coredns").as_deref() == Some(h.as_str()));
        let kube_proxy =
            kube_proxy.filter(|h| template_hash(world, &r::DAEMONSETS, "kube-system", "kube-proxy").as_deref() == Some(h.as_str()));
        world.sim.faults.network = if coredns.is_none() && kube_proxy.is_none() { None } else { Some((coredns, kube_proxy)) };
    }
    if !world.sim.faults.argocd_down.is_empty() {
        let uids = world.store.all_uids();
        world.sim.faults.argocd_down.retain(|u| uids.contains(u));
    }
}
