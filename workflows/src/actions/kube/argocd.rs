//! ArgoCD Applications through the dynamic API (`argoproj.io/v1alpha1`,
//! kind Application): list them with their sync and health status, and
//! trigger a sync as `kubectl patch application --type merge -p
//! '{"operation":{...}}'` does, waiting until the operation Succeeded and the
//! application is Synced and Healthy. Refuses to start a sync while another
//! operation is in progress (one dr started itself is waited on instead).

use std::collections::BTreeMap;
use std::sync::Arc;

use dr_orchestrator::{ActionCtx, ActionError, TypedAction};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{default_true, listed, status_code, wait_for, Kube, KubeConnection};

/// Who dr's sync operations say initiated them.
pub const INITIATED_BY: &str = "dr";
/// The name of the `operation.info` entry that marks one step attempt's sync.
pub const MARKER: &str = "dr-step";

fn default_namespace() -> String {
    "argocd".to_owned()
}

fn resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application"))
}

fn str_at(app: &DynamicObject, pointer: &str) -> String {
    app.data.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_owned()
}

/// One Application as `kubectl get applications -n argocd` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppStatus {
    pub name: String,
    pub sync: String,
    pub health: String,
    /// `status.operationState.phase` of the last or current operation.
    pub operation_phase: Option<String>,
    pub operation_in_progress: bool,
    /// Who started the pending / last operation (`automated`, a user name).
    pub initiated_by: Option<String>,
    pub message: Option<String>,
}

impl AppStatus {
    pub fn of(app: &DynamicObject) -> Self {
        let phase = Some(str_at(app, "/status/operationState/phase")).filter(|p| !p.is_empty());
        let pending = app.data.get("operation").is_some_and(|o| !o.is_null());
        let in_progress = pending || matches!(phase.as_deref(), Some("Running" | "Terminating"));
        let by = if pending { app.data.pointer("/operation/initiatedBy") } else { app.data.pointer("/status/operationState/operation/initiatedBy") };
        let initiated_by = by.and_then(|b| {
            b.get("username").and_then(Value::as_str).map(str::to_owned).or_else(|| {
                b.get("automated").and_then(Value::as_bool).filter(|a| *a).map(|_| "automated".to_owned())
            })
        });
        AppStatus {
            name: app.name_any(),
            sync: Some(str_at(app, "/status/sync/status")).filter(|s| !s.is_empty()).unwrap_or_else(|| "Unknown".to_owned()),
            health: Some(str_at(app, "/status/health/status")).filter(|s| !s.is_empty()).unwrap_or_else(|| "Unknown".to_owned()),
            operation_phase: phase,
            operation_in_progress: in_progress,
            initiated_by,
            message: Some(str_at(app, "/status/operationState/message")).filter(|m| !m.is_empty()),
        }
    }

    pub fn healthy(&self) -> bool {
        self.sync == "Synced" && self.health == "Healthy"
    }
}

async fn list_apps(kube: &Kube, namespace: &str) -> Result<Vec<DynamicObject>, ActionError> {
    let api: Api<DynamicObject> = Api::namespaced_with(kube.client.clone(), namespace, &resource());
    let list = api.list(&ListParams::default()).await.map_err(|e| {
        if status_code(&e) == Some(404) {
            ActionError::permanent(format!(
                "no ArgoCD Applications API in namespace {namespace} on {}: is ArgoCD installed (platform-deploy)?",
                kube.server
            ))
        } else {
            kube.error(&format!("listing ArgoCD applications in namespace {namespace}"), e)
        }
    })?;
    Ok(list.items)
}

// ---------------------------------------------------------------------------
// kube.argocd-apps

/// `kubectl get applications -n argocd`: each application's sync and health.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ArgoApps {
    #[serde(flatten)]
    pub connection: KubeConnection,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Fail (retryable) unless every application is Synced and Healthy.
    #[serde(default)]
    pub require_healthy: bool,
}

/// `name (sync/health)` of the applications that are not Synced and Healthy.
fn not_healthy(apps: &[AppStatus]) -> Vec<String> {
    apps.iter().filter(|a| !a.healthy()).map(|a| format!("{} ({}/{})", a.name, a.sync, a.health)).collect()
}

impl TypedAction for ArgoApps {
    const KIND: &'static str = "kube.argocd-apps";
    type Params = Self;
    type Output = Vec<AppStatus>;

    fn params(&self) -> &Self {
        self
    }

    fn summary(&self, apps: &Vec<AppStatus>) -> String {
        let bad = not_healthy(apps);
        format!("{} applications, {} not Synced/Healthy{}", apps.len(), bad.len(), listed(&bad))
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<Vec<AppStatus>, ActionError> {
        let apps = ctx
            .guard("listing ArgoCD applications", async {
                let kube = self.connection.connect().await?;
                list_apps(&kube, &self.namespace).await
            })
            .await?;
        let apps: Vec<AppStatus> = apps.iter().map(AppStatus::of).collect();
        let bad = not_healthy(&apps);
        if self.require_healthy && !bad.is_empty() {
            return Err(ActionError::retryable(format!(
                "ArgoCD applications not Synced/Healthy: {}; sync them (kube.argocd-sync) or check argocd's pods",
                bad.join(", ")
            )));
        }
        Ok(apps)
    }
}

// ---------------------------------------------------------------------------
// kube.argocd-sync

/// Sync ArgoCD applications: a merge patch of their top-level `operation`
/// (`initiatedBy` and `sync`), refused while another operation is in
/// progress, then a watch until each operation Succeeded and the
/// application is Synced and Healthy.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ArgoSync {
    #[serde(flatten)]
    pub connection: KubeConnection,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The applications; every one in the namespace when empty.
    #[serde(default)]
    pub apps: Vec<String>,
    #[serde(default)]
    pub prune: bool,
    /// Wait until each is Synced and Healthy (default true).
    #[serde(default = "default_true")]
    pub wait: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncOutcome {
    pub name: String,
    /// `synced` (Succeeded, Synced, Healthy), `failed`, `triggered` (not waited on)
    /// or `adopted` (dr's earlier operation, waited on).
    pub outcome: String,
    pub status: AppStatus,
}

impl ArgoSync {
    async fn sync(&self, kube: &Kube, ctx: &ActionCtx) -> Result<Vec<SyncOutcome>, ActionError> {
        let ns = &self.namespace;
        let all = list_apps(kube, ns).await?;
        let by_name: BTreeMap<String, &DynamicObject> = all.iter().map(|a| (a.name_any(), a)).collect();
        let names: Vec<String> = if self.apps.is_empty() { by_name.keys().cloned().collect() } else { self.apps.clone() };
        let missing: Vec<&String> = names.iter().filter(|n| !by_name.contains_key(*n)).collect();
        if !missing.is_empty() {
            return Err(ActionError::permanent(format!(
                "no ArgoCD application {} in namespace {ns} on {}",
                missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                kube.server
            )));
        }
        // Refuse while someone else's operation runs; take up dr's own.
        let mut adopted = Vec::new();
        let mut refused = Vec::new();
        for name in &names {
            let status = AppStatus::of(by_name[name]);
            if status.operation_in_progress {
                if status.initiated_by.as_deref() == Some(INITIATED_BY) {
                    adopted.push(name.clone());
                } else {
                    refused.push(format!(
                        "{name} (phase {}, initiated by {})",
                        status.operation_phase.as_deref().unwrap_or("pending"),
                        status.initiated_by.as_deref().unwrap_or("unknown")
                    ));
                }
            }
        }
        if !refused.is_empty() {
            return Err(ActionError::retryable(format!(
                "sync refused, an operation is already in progress on ArgoCD application {} in namespace {ns}; \
                 nothing was patched; wait for it to finish or terminate it (argocd app terminate-op NAME)",
                refused.join(", ")
            )));
        }
        let marker = format!("{}/{}/{}", ctx.run_id, ctx.step, ctx.attempt);
        let api: Api<DynamicObject> = Api::namespaced_with(kube.client.clone(), ns, &resource());
        let patch = serde_json::json!({"operation": {
            "initiatedBy": {"username": INITIATED_BY},
            "info": [{"name": MARKER, "value": marker}],
            "sync": {"prune": self.prune},
        }});
        for name in names.iter().filter(|n| !adopted.contains(n)) {
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| kube.error(&format!("triggering the sync of ArgoCD application {name} in namespace {ns}"), e))?;
            tracing::info!(app = %name, "argocd sync triggered");
        }
        if !self.wait {
            let outcomes = names
                .iter()
                .map(|n| SyncOutcome {
                    name: n.clone(),
                    outcome: if adopted.contains(n) { "adopted" } else { "triggered" }.to_owned(),
                    status: AppStatus::of(by_name[n]),
                })
                .collect();
            return Ok(outcomes);
        }
        let watch = watcher::Config::default();
        let what = format!("sync of ArgoCD applications {} in namespace {ns}", names.join(", "));
        let outcomes = wait_for(kube, api, resource(), watch, ctx, &what, |items: &[Arc<DynamicObject>]| {
            let mut outcomes = Vec::new();
            let mut waiting = Vec::new();
            for name in &names {
                let Some(app) = items.iter().find(|a| a.name_any() == *name) else {
                    waiting.push(format!("{name}: gone"));
                    continue;
                };
                let status = AppStatus::of(app);
                let ours = if adopted.contains(name) {
                    status.initiated_by.as_deref() == Some(INITIATED_BY)
                } else {
                    app.data
                        .pointer("/status/operationState/operation/info")
                        .and_then(Value::as_array)
                        .is_some_and(|info| info.iter().any(|i| i["name"] == MARKER && i["value"] == marker.as_str()))
                };
                let finished = ours && !status.operation_in_progress;
                let outcome = match status.operation_phase.as_deref() {
                    Some("Succeeded") if finished && status.healthy() => Some("synced"),
                    Some("Failed" | "Error") if finished => Some("failed"),
                    _ => None,
                };
                match outcome {
                    Some(outcome) => outcomes.push(SyncOutcome { name: name.clone(), outcome: outcome.to_owned(), status }),
                    None => waiting.push(format!(
                        "{name}: operation {}, {}/{}",
                        status.operation_phase.as_deref().unwrap_or("pending"),
                        status.sync,
                        status.health
                    )),
                }
            }
            if waiting.is_empty() {
                Ok(outcomes)
            } else {
                Err(waiting.join("; "))
            }
        })
        .await?;
        let failed: Vec<String> = outcomes
            .iter()
            .filter(|o| o.outcome == "failed")
            .map(|o| format!("{}: {}", o.name, o.status.message.as_deref().unwrap_or("no message")))
            .collect();
        if !failed.is_empty() {
            return Err(ActionError::retryable(format!(
                "ArgoCD sync failed in namespace {ns}: {}; check the applications (argocd app get NAME)",
                failed.join("; ")
            )));
        }
        Ok(outcomes)
    }
}

impl TypedAction for ArgoSync {
    const KIND: &'static str = "kube.argocd-sync";
    type Params = Self;
    type Output = Vec<SyncOutcome>;

    fn params(&self) -> &Self {
        self
    }

    fn summary(&self, outcomes: &Vec<SyncOutcome>) -> String {
        let each: Vec<String> = outcomes.iter().map(|o| format!("{}: {}", o.name, o.outcome)).collect();
        format!("ArgoCD applications {}", each.join(", "))
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<Vec<SyncOutcome>, ActionError> {
        ctx.guard("ArgoCD sync", async {
            let kube = self.connection.connect().await?;
            self.sync(&kube, ctx).await
        })
        .await
    }

    /// Done when every application is Synced and Healthy with no operation
    /// in progress; the output is each one's status, as `synced`.
    async fn probe(&self, ctx: &ActionCtx) -> Result<Option<Vec<SyncOutcome>>, ActionError> {
        let apps = ctx
            .guard("listing ArgoCD applications", async {
                let kube = self.connection.connect().await?;
                list_apps(&kube, &self.namespace).await
            })
            .await?;
        let wanted = |a: &&DynamicObject| self.apps.is_empty() || self.apps.contains(&a.name_any());
        let selected: Vec<AppStatus> = apps.iter().filter(wanted).map(AppStatus::of).collect();
        let all_there = self.apps.is_empty() || selected.len() == self.apps.len();
        let done = all_there && selected.iter().all(|a| a.healthy() && !a.operation_in_progress);
        Ok(done.then(|| {
            selected.into_iter().map(|status| SyncOutcome { name: status.name.clone(), outcome: "synced".to_owned(), status }).collect()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(value: Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn an_operation_is_in_progress_while_pending_or_running() {
        let pending = app(serde_json::json!({"metadata": {"name": "web"},
            "operation": {"initiatedBy": {"automated": true}, "sync": {}},
            "status": {"sync": {"status": "OutOfSync"}, "health": {"status": "Healthy"}}}));
        let status = AppStatus::of(&pending);
        assert!(status.operation_in_progress && !status.healthy());
        assert_eq!(status.initiated_by.as_deref(), Some("automated"));

        let running = app(serde_json::json!({"metadata": {"name": "web"},
            "status": {"operationState": {"phase": "Running", "operation": {"initiatedBy": {"username": "dr"}}}}}));
        let status = AppStatus::of(&running);
        assert!(status.operation_in_progress);
        assert_eq!((status.sync.as_str(), status.initiated_by.as_deref()), ("Unknown", Some("dr")));

        let done = app(serde_json::json!({"metadata": {"name": "web"},
            "status": {"sync": {"status": "Synced"}, "health": {"status": "Healthy"},
                       "operationState": {"phase": "Succeeded", "message": "ok", "operation": {"initiatedBy": {"username": "dr"}}}}}));
        let status = AppStatus::of(&done);
        assert!(!status.operation_in_progress && status.healthy());
        assert_eq!(status.message.as_deref(), Some("ok"));
    }
}
