//! The resource types the simulated API server serves, and the discovery
//! documents (`/api`, `/apis`, group/version resource lists) built from them.
//! Owns the static table only; refuses any storage or behaviour.

use serde_json::{json, Value};

/// One served resource type (a row of the discovery documents).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceType {
    /// API group, `""` for core.
    pub group: &'static str,
    pub version: &'static str,
    /// Plural lower-case name used in paths, e.g. `deployments`.
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Whether writes to the main resource leave `.status` alone (a `status` subresource exists).
    pub status_subresource: bool,
}

impl ResourceType {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Store key of the type: `pods`, `apps/deployments`.
    pub fn key(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}/{}", self.group, self.plural)
        }
    }
}

#[allow(clippy::too_many_arguments)]
const fn rt(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    status_subresource: bool,
) -> ResourceType {
    ResourceType { group, version, plural, singular, kind, namespaced, short_names, status_subresource }
}

pub const NODES: ResourceType = rt("", "v1", "nodes", "node", "Node", false, &["no"], true);
pub const NAMESPACES: ResourceType = rt("", "v1", "namespaces", "namespace", "Namespace", false, &["ns"], true);
pub const PODS: ResourceType = rt("", "v1", "pods", "pod", "Pod", true, &["po"], true);
pub const ENDPOINTS: ResourceType = rt("", "v1", "endpoints", "endpoints", "Endpoints", true, &["ep"], false);
pub const SERVICES: ResourceType = rt("", "v1", "services", "service", "Service", true, &["svc"], true);
pub const CONFIGMAPS: ResourceType = rt("", "v1", "configmaps", "configmap", "ConfigMap", true, &["cm"], false);
pub const SECRETS: ResourceType = rt("", "v1", "secrets", "secret", "Secret", true, &[], false);
pub const COMPONENTSTATUSES: ResourceType =
    rt("", "v1", "componentstatuses", "componentstatus", "ComponentStatus", false, &["cs"], false);
pub const EVENTS: ResourceType = rt("", "v1", "events", "event", "Event", true, &["ev"], false);
pub const DEPLOYMENTS: ResourceType = rt("apps", "v1", "deployments", "deployment", "Deployment", true, &["deploy"], true);
pub const DAEMONSETS: ResourceType = rt("apps", "v1", "daemonsets", "daemonset", "DaemonSet", true, &["ds"], true);
pub const REPLICASETS: ResourceType = rt("apps", "v1", "replicasets", "replicaset", "ReplicaSet", true, &["rs"], true);
pub const STATEFULSETS: ResourceType = rt("apps", "v1", "statefulsets", "statefulset", "StatefulSet", true, &["sts"], true);
pub const PDBS: ResourceType =
    rt("policy", "v1", "poddisruptionbudgets", "poddisruptionbudget", "PodDisruptionBudget", true, &["pdb"], true);
pub const APPLICATIONS: ResourceType =
    rt("argoproj.io", "v1alpha1", "applications", "application", "Application", true, &["app", "apps"], false);

/// Every served type.
pub const ALL: &[ResourceType] = &[
    NODES, NAMESPACES, PODS, ENDPOINTS, SERVICES, CONFIGMAPS, SECRETS, COMPONENTSTATUSES, EVENTS, DEPLOYMENTS, DAEMONSETS, REPLICASETS, STATEFULSETS, PDBS,
    APPLICATIONS,
];

/// The type served at `group/version/plural`.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<ResourceType> {
    ALL.iter().copied().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The type of a given `apiVersion` + `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<ResourceType> {
    ALL.iter().copied().find(|r| r.api_version() == api_version && r.kind == kind)
}

fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in ALL {
        if !r.group.is_empty() && !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

pub fn version_doc() -> Value {
    json!({
        "major": "1", "minor": "32", "gitVersion": "v1.32.0-dr-lab", "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean", "buildDate": "2026-11-01T00:00:00Z", "goVersion": "go1.23.0",
        "compiler": "gc", "platform": "linux/amd64"
    })
}

pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]
    })
}

pub fn api_group_list() -> Value {
    let groups: Vec<Value> = groups()
        .into_iter()
        .map(|(g, v)| {
            let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
            json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn api_group(group: &str) -> Option<Value> {
    let (g, v) = groups().into_iter().find(|(g, _)| *g == group)?;
    let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
    Some(json!({"kind": "APIGroup", "apiVersion": "v1", "name": g, "versions": [gv.clone()], "preferredVersion": gv}))
}

const VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// `APIResourceList` for `group/version`, or `None` if not served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in ALL.iter().filter(|r| r.group == group && r.version == version) {
        let mut entry = json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
            "verbs": VERBS, "shortNames": r.short_names,
        });
        if [PODS, SERVICES, DEPLOYMENTS, DAEMONSETS, REPLICASETS, STATEFULSETS].contains(r) {
            entry["categories"] = json!(["all"]);
        }
        resources.push(entry);
        if r.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced,
                "kind": r.kind, "verbs": ["get", "patch", "update"],
            }));
        }
        if [DEPLOYMENTS, REPLICASETS, STATEFULSETS].contains(r) {
            resources.push(json!({
                "name": format!("{}/scale", r.plural), "singularName": "", "namespaced": true, "group": "autoscaling",
                "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"],
            }));
        }
        if *r == PODS {
            resources.push(json!({
                "name": "pods/eviction", "singularName": "", "namespaced": true, "group": "policy",
                "version": "v1", "kind": "Eviction", "verbs": ["create"],
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: one entry per served group/version.
pub fn openapi_v3_root() -> Value {
    let mut paths = serde_json::Map::new();
    let mut gvs: Vec<(&str, &str)> = vec![("", "v1")];
    gvs.extend(groups());
    for (g, v) in gvs {
        let p = gv_path(g, v);
        paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=dr-lab")}));
    }
    json!({"paths": paths})
}

/// `/openapi/v3/{api/v1|apis/G/V}`: a skeleton with one PATCH operation per kind that declares
/// the `fieldValidation` query parameter, so kubectl validates on the server side instead of
/// needing full schemas. `None` when the group/version is not served.
pub fn openapi_v3_group(group: &str, version: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    for r in ALL.iter().filter(|r| r.group == group && r.version == version) {
        let prefix = format!("/{}", gv_path(group, version));
        let path = if r.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{prefix}/{}/{{name}}", r.plural)
        };
        let op = json!({
            "operationId": format!("patch{}", r.kind),
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": r.kind},
            "parameters": [
                {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}}
            ],
            "responses": {"200": {"description": "OK"}}
        });
        paths.insert(path, json!({"patch": op}));
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0"}, "paths": paths, "components": {"schemas": {}}}))
}
