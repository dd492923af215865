//! `Table` responses (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`)
//! so `kubectl get` prints the columns a real cluster prints (STATUS,
//! READY, RESTARTS...). Rendering only.

use serde_json::{json, Value};

use super::controllers::{node_ready, pod_crashlooping, pod_ready};
use super::resources::{self as r, ResourceType};

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

fn i(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn age(obj: &Value) -> String {
    let created = s(obj, "/metadata/creationTimestamp");
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(created) else { return "<unknown>".into() };
    let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds().max(0);
    match secs {
        0..120 => format!("{secs}s"),
        120..7200 => format!("{}m", secs / 60),
        7200..172_800 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

fn col(name: &str, kind: &str, priority: u8) -> Value {
    json!({"name": name, "type": kind, "format": if name == "Name" {"name"} else {""}, "description": "", "priority": priority})
}

fn pod_status(p: &Value) -> String {
    if pod_crashlooping(p) {
        return "CrashLoopBackOff".into();
    }
    match s(p, "/status/phase") {
        "" => "Pending".into(),
        phase => phase.into(),
    }
}

fn columns_and_cells(rt: &ResourceType, o: &Value) -> (Vec<Value>, Vec<Value>) {
    let name = json!(s(o, "/metadata/name"));
    let age = json!(age(o));
    match *rt {
        r::PODS => {
            let cs = o.pointer("/status/containerStatuses").and_then(Value::as_array).cloned().unwrap_or_default();
            let total = o.pointer("/spec/containers").and_then(Value::as_array).map_or(0, Vec::len);
            let ready = cs.iter().filter(|c| c["ready"] == true).count();
            let restarts: i64 = cs.iter().map(|c| c["restartCount"].as_i64().unwrap_or(0)).sum();
            let ip = match s(o, "/status/podIP") { "" => "<none>", x => x };
            let node = match s(o, "/spec/nodeName") { "" => "<none>", x => x };
            let _ = pod_ready(o);
            (
                vec![col("Name", "string", 0), col("Ready", "string", 0), col("Status", "string", 0), col("Restarts", "string", 0),
                     col("Age", "string", 0), col("IP", "string", 1), col("Node", "string", 1)],
                vec![name, json!(format!("{ready}/{total}")), json!(pod_status(o)), json!(restarts.to_string()), age, json!(ip), json!(node)],
            )
        }
        r::NODES => {
            let mut status = if node_ready(o) {
                "Ready".to_string()
            } else if o.pointer("/status/conditions").is_some() {
                "NotReady".to_string()
            } else {
                "Unknown".to_string()
            };
            if o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
                status.push_str(",SchedulingDisabled");
            }
            let roles: Vec<String> = o
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|l| l.keys().filter_map(|k| k.strip_prefix("node-role.kubernetes.io/").map(str::to_string)).collect())
                .unwrap_or_default();
            let roles = if roles.is_empty() { "<none>".to_string() } else { roles.join(",") };
            let ip = o
                .pointer("/status/addresses")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().find(|x| x["type"] == "InternalIP"))
                .map(|x| s(x, "/address").to_string())
                .unwrap_or_default();
            (
                vec![col("Name", "string", 0), col("Status", "string", 0), col("Roles", "string", 0), col("Age", "string", 0),
                     col("Version", "string", 0), col("Internal-IP", "string", 1)],
                vec![name, json!(status), json!(roles), age, json!(s(o, "/status/nodeInfo/kubeletVersion")), json!(ip)],
            )
        }
        r::DEPLOYMENTS => (
            vec![col("Name", "string", 0), col("Ready", "string", 0), col("Up-to-date", "integer", 0), col("Available", "integer", 0), col("Age", "string", 0)],
            vec![name, json!(format!("{}/{}", i(o, "/status/readyReplicas"), i(o, "/spec/replicas"))), json!(i(o, "/status/updatedReplicas")),
                 json!(i(o, "/status/availableReplicas")), age],
        ),
        r::REPLICASETS => (
            vec![col("Name", "string", 0), col("Desired", "integer", 0), col("Current", "integer", 0), col("Ready", "integer", 0), col("Age", "string", 0)],
            vec![name, json!(i(o, "/spec/replicas")), json!(i(o, "/status/replicas")), json!(i(o, "/status/readyReplicas")), age],
        ),
        r::STATEFULSETS => (
            vec![col("Name", "string", 0), col("Ready", "string", 0), col("Age", "string", 0)],
            vec![name, json!(format!("{}/{}", i(o, "/status/readyReplicas"), i(o, "/spec/replicas"))), age],
        ),
        r::DAEMONSETS => (
            vec![col("Name", "string", 0), col("Desired", "integer", 0), col("Current", "integer", 0), col("Ready", "integer", 0),
                 col("Up-to-date", "integer", 0), col("Available", "integer", 0), col("Age", "string", 0)],
            vec![name, json!(i(o, "/status/desiredNumberScheduled")), json!(i(o, "/status/currentNumberScheduled")),
                 json!(i(o, "/status/numberReady")), json!(i(o, "/status/updatedNumberScheduled")), json!(i(o, "/status/numberAvailable")), age],
        ),
        r::ENDPOINTS => {
            let mut eps = Vec::new();
            for subset in o.pointer("/subsets").and_then(Value::as_array).cloned().unwrap_or_default() {
                let port = subset.pointer("/ports/0/port").and_then(Value::as_i64);
                for a in subset.get("addresses").and_then(Value::as_array).cloned().unwrap_or_default() {
                    eps.push(match port { Some(p) => format!("{}:{p}", s(&a, "/ip")), None => s(&a, "/ip").to_string() });
                }
            }
            let eps = if eps.is_empty() { "<none>".to_string() } else { eps.join(",") };
            (vec![col("Name", "string", 0), col("Endpoints", "string", 0), col("Age", "string", 0)], vec![name, json!(eps), age])
        }
        r::SERVICES => {
            let ports: Vec<String> = o
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|p| format!("{}/{}", p["port"], s(p, "/protocol")))
                .collect();
            (
                vec![col("Name", "string", 0), col("Type", "string", 0), col("Cluster-IP", "string", 0), col("External-IP", "string", 0),
                     col("Port(s)", "string", 0), col("Age", "string", 0)],
                vec![name, json!(s(o, "/spec/type")), json!(match s(o, "/spec/clusterIP") { "" => "<none>", x => x }),
                     json!(match s(o, "/spec/loadBalancerIP") { "" => "<none>", x => x }), json!(ports.join(",")), age],
            )
        }
        r::PDBS => {
            let show = |p: &str| o.pointer(p).map_or("N/A".to_string(), |v| v.as_str().map_or(v.to_string(), str::to_string));
            (
                vec![col("Name", "string", 0), col("Min Available", "string", 0), col("Max Unavailable", "string", 0),
                     col("Allowed Disruptions", "integer", 0), col("Age", "string", 0)],
                vec![name, json!(show("/spec/minAvailable")), json!(show("/spec/maxUnavailable")), json!(i(o, "/status/disruptionsAllowed")), age],
            )
        }
        r::APPLICATIONS => (
            vec![col("Name", "string", 0), col("Sync Status", "string", 0), col("Health Status", "string", 0)],
            vec![name, json!(s(o, "/status/sync/status")), json!(s(o, "/status/health/status"))],
        ),
        r::EVENTS => {
            let involved = format!("{}/{}", s(o, "/involvedObject/kind").to_lowercase(), s(o, "/involvedObject/name"));
            (
                vec![col("Last Seen", "string", 0), col("Type", "string", 0), col("Reason", "string", 0), col("Object", "string", 0),
                     col("Message", "string", 0)],
                vec![age, json!(s(o, "/type")), json!(s(o, "/reason")), json!(involved), json!(s(o, "/message"))],
            )
        }
        r::COMPONENTSTATUSES => {
            let healthy = o.pointer("/conditions/0/status").and_then(Value::as_str) == Some("True");
            (
                vec![col("Name", "string", 0), col("Status", "string", 0), col("Message", "string", 0), col("Error", "string", 0)],
                vec![name, json!(if healthy { "Healthy" } else { "Unhealthy" }), json!(s(o, "/conditions/0/message")), json!(s(o, "/conditions/0/error"))],
            )
        }
        r::NAMESPACES => (
            vec![col("Name", "string", 0), col("Status", "string", 0), col("Age", "string", 0)],
            vec![name, json!(match s(o, "/status/phase") { "" => "Active", x => x }), age],
        ),
        _ => (vec![col("Name", "string", 0), col("Age", "string", 0)], vec![name, age]),
    }
}

/// A `meta.k8s.io/v1` Table of `items`.
pub fn table(rt: &ResourceType, items: &[Value], rv: &str, include_object: bool) -> Value {
    let mut columns = None;
    let mut rows = Vec::new();
    for o in items {
        let (cols, cells) = columns_and_cells(rt, o);
        columns.get_or_insert(cols);
        let object = if include_object {
            o.clone()
        } else {
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata").cloned().unwrap_or(json!({}))})
        };
        rows.push(json!({"cells": cells, "object": object}));
    }
    let columns = columns.unwrap_or_else(|| columns_and_cells(rt, &json!({})).0);
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv}, "columnDefinitions": columns, "rows": rows})
}
