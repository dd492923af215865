//! Test resources for the DR drill: `kube.apply-manifests` puts the objects of
//! a YAML file (several documents) into one namespace — created if missing —
//! with the labels that would let ArgoCD adopt or prune them stripped
//! (`app.kubernetes.io/instance`, `argocd.argoproj.io/instance`); and
//! `kube.delete-manifests` removes them and the namespace again (objects that
//! are already gone count as removed).
//!
//! Owns: create-or-replace of arbitrary kinds through discovery. Refuses:
//! objects of another namespace, cluster-scoped objects (the drill must not
//! touch the cluster outside its namespace).

use std::path::PathBuf;

use dr_orchestrator::{ActionCtx, ActionError, TypedAction};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use kube::{Api, ResourceExt};
use serde::{Deserialize, Serialize};

use super::{status_code, Kube, KubeConnection};

/// The labels that tie an object to an ArgoCD Application.
pub const ARGOCD_LABELS: &[&str] = &["app.kubernetes.io/instance", "argocd.argoproj.io/instance"];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestsParams {
    #[serde(flatten)]
    pub connection: KubeConnection,
    /// The YAML file (documents separated by `---`), on the bastion.
    pub file: PathBuf,
    pub namespace: String,
}

/// What was applied or deleted: `Kind/name` in the namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestsReport {
    pub namespace: String,
    pub objects: Vec<String>,
    /// Labels removed (`Kind/name: label`).
    pub stripped: Vec<String>,
}

fn read_objects(file: &std::path::Path) -> Result<Vec<serde_json::Value>, ActionError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| ActionError::permanent(format!("cannot read the test resources {}: {e}", file.display())))?;
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
        .map_err(|e| ActionError::permanent(format!("{} is not valid YAML: {e}", file.display())))?;
    Ok(docs.into_iter().filter(|d| d.is_object() && d.get("kind").is_some()).collect())
}

/// The object placed into `namespace`, with ArgoCD's labels stripped (also from a pod template).
fn prepared(mut object: serde_json::Value, namespace: &str, stripped: &mut Vec<String>) -> Result<serde_json::Value, ActionError> {
    let name = object.pointer("/metadata/name").and_then(|n| n.as_str()).unwrap_or_default().to_owned();
    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
    if let Some(other) = object.pointer("/metadata/namespace").and_then(|n| n.as_str()) {
        if other != namespace {
            return Err(ActionError::permanent(format!("{kind}/{name} names namespace {other}; the drill only touches {namespace}")));
        }
    }
    object["metadata"]["namespace"] = serde_json::Value::String(namespace.to_owned());
    for path in ["/metadata/labels", "/spec/template/metadata/labels"] {
        if let Some(labels) = object.pointer_mut(path).and_then(|l| l.as_object_mut()) {
            for label in ARGOCD_LABELS {
                if labels.remove(*label).is_some() {
                    stripped.push(format!("{kind}/{name}: {label}"));
                }
            }
        }
    }
    Ok(object)
}

async fn api_for(kube: &Kube, object: &serde_json::Value, namespace: &str) -> Result<Api<DynamicObject>, ActionError> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (resource, caps) = discovery::pinned_kind(&kube.client, &gvk)
        .await
        .map_err(|e| kube.error(&format!("discovering {api_version} {kind}"), e))?;
    if caps.scope != Scope::Namespaced {
        return Err(ActionError::permanent(format!("{kind} is cluster-scoped; the drill only creates objects in {namespace}")));
    }
    Ok(Api::namespaced_with(kube.client.clone(), namespace, &resource))
}

/// `kube.apply-manifests`.
#[derive(Clone, Debug)]
pub struct ApplyManifests {
    pub params: ManifestsParams,
}

impl TypedAction for ApplyManifests {
    const KIND: &'static str = "kube.apply-manifests";
    type Params = ManifestsParams;
    type Output = ManifestsReport;

    fn params(&self) -> &ManifestsParams {
        &self.params
    }

    fn summary(&self, r: &ManifestsReport) -> String {
        format!("applied {} into {} ({} ArgoCD labels stripped)", r.objects.join(", "), r.namespace, r.stripped.len())
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<ManifestsReport, ActionError> {
        let p = &self.params;
        ctx.guard(&format!("applying {} into {}", p.file.display(), p.namespace), async {
            let kube = p.connection.connect().await?;
            let objects = read_objects(&p.file)?;
            let namespaces: Api<Namespace> = Api::all(kube.client.clone());
            let ns: Namespace = serde_json::from_value(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": p.namespace}}))
                .map_err(|e| ActionError::permanent(format!("namespace {}: {e}", p.namespace)))?;
            match namespaces.create(&PostParams::default(), &ns).await {
                Ok(_) => {}
                Err(e) if status_code(&e) == Some(409) => {}
                Err(e) => return Err(kube.error(&format!("creating namespace {}", p.namespace), e)),
            }
            let mut report = ManifestsReport { namespace: p.namespace.clone(), ..ManifestsReport::default() };
            for object in objects {
                let object = prepared(object, &p.namespace, &mut report.stripped)?;
                let api = api_for(&kube, &object, &p.namespace).await?;
                let mut dynamic: DynamicObject =
                    serde_json::from_value(object).map_err(|e| ActionError::permanent(format!("{}: {e}", p.file.display())))?;
                let name = dynamic.name_any();
                let label = format!("{}/{name}", dynamic.types.as_ref().map(|t| t.kind.as_str()).unwrap_or("object"));
                match api.create(&PostParams::default(), &dynamic).await {
                    Ok(_) => {}
                    Err(e) if status_code(&e) == Some(409) => {
                        // There already: replace it with what the file says.
                        let current = api.get(&name).await.map_err(|e| kube.error(&format!("reading {label}"), e))?;
                        dynamic.metadata.resource_version = current.metadata.resource_version;
                        api.replace(&name, &PostParams::default(), &dynamic).await.map_err(|e| kube.error(&format!("replacing {label}"), e))?;
                    }
                    Err(e) => return Err(kube.error(&format!("creating {label}"), e)),
                }
                report.objects.push(label);
            }
            Ok(report)
        })
        .await
    }
}

/// `kube.delete-manifests`: the objects of the file, then the namespace.
#[derive(Clone, Debug)]
pub struct DeleteManifests {
    pub params: ManifestsParams,
}

impl TypedAction for DeleteManifests {
    const KIND: &'static str = "kube.delete-manifests";
    type Params = ManifestsParams;
    type Output = ManifestsReport;

    fn params(&self) -> &ManifestsParams {
        &self.params
    }

    fn summary(&self, r: &ManifestsReport) -> String {
        format!("removed {} and namespace {}", r.objects.join(", "), r.namespace)
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<ManifestsReport, ActionError> {
        let p = &self.params;
        ctx.guard(&format!("removing {} from {}", p.file.display(), p.namespace), async {
            let kube = p.connection.connect().await?;
            let mut report = ManifestsReport { namespace: p.namespace.clone(), ..ManifestsReport::default() };
            for object in read_objects(&p.file)? {
                let object = prepared(object, &p.namespace, &mut report.stripped)?;
                let api = api_for(&kube, &object, &p.namespace).await?;
                let name = object.pointer("/metadata/name").and_then(|n| n.as_str()).unwrap_or_default().to_owned();
                let label = format!("{}/{name}", object["kind"].as_str().unwrap_or("object"));
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(e) if status_code(&e) == Some(404) => {}
                    Err(e) => return Err(kube.error(&format!("deleting {label}"), e)),
                }
                report.objects.push(label);
            }
            let namespaces: Api<Namespace> = Api::all(kube.client.clone());
            match namespaces.delete(&p.namespace, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if status_code(&e) == Some(404) => {}
                Err(e) => return Err(kube.error(&format!("deleting namespace {}", p.namespace), e)),
            }
            Ok(report)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_go_into_the_drill_namespace_without_argocd_labels() {
        let object = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web", "app.kubernetes.io/instance": "prod"}},
            "spec": {"template": {"metadata": {"labels": {"argocd.argoproj.io/instance": "prod", "app": "web"}}}}
        });
        let mut stripped = Vec::new();
        let out = prepared(object, "dr-test", &mut stripped).unwrap();
        assert_eq!(out["metadata"]["namespace"], "dr-test");
        assert_eq!(out["metadata"]["labels"], serde_json::json!({"app": "web"}));
        assert_eq!(out["spec"]["template"]["metadata"]["labels"], serde_json::json!({"app": "web"}));
        assert_eq!(stripped.len(), 2);
        let elsewhere = serde_json::json!({"kind": "ConfigMap", "metadata": {"name": "x", "namespace": "prod"}});
        assert!(prepared(elsewhere, "dr-test", &mut Vec::new()).unwrap_err().message.contains("only touches dr-test"));
    }
}
