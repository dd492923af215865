//! The ArgoCD actions against the lab's simulated API server: applications
//! listed with sync and health, a sync brought to Succeeded / Synced /
//! Healthy with dr's marker, a sync refused (nothing patched) while another
//! operation is in progress, and dr's own pending operation taken up.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup is a failed test

mod support;

use std::time::Duration;

use dr_orchestrator::{ActionError, TypedAction};
use dr_lab::kube::resources;
use dr_workflows::actions::kube::argocd::{AppStatus, ArgoApps, ArgoSync, SyncOutcome};
use dr_workflows::actions::kube::pods::{DeletePods, DeletePodsReport};
use serde_json::{json, Value};
use support::ctx;

/// The shared fixture, with this file's helpers.
struct Lab(support::KubeLab);

impl std::ops::Deref for Lab {
    type Target = support::KubeLab;
    fn deref(&self) -> &support::KubeLab {
        &self.0
    }
}

impl Lab {
    async fn start() -> Lab {
        Lab(support::KubeLab::start().await)
    }

    fn app(&self, name: &str) -> Value {
        let world = self.server.shared().lock();
        world.store.get(&resources::APPLICATIONS, "argocd", name).cloned().unwrap_or(Value::Null)
    }

    fn sync(&self, apps: &[&str], wait: bool) -> ArgoSync {
        ArgoSync {
            connection: self.connection(),
            namespace: "argocd".into(),
            apps: apps.iter().map(|s| (*s).to_owned()).collect(),
            prune: false,
            wait,
        }
    }
}


async fn run<A: TypedAction>(action: &A, timeout: Duration, step: &str) -> Result<A::Output, ActionError> {
    support::run_report(action, support::ctx(timeout, step)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_brings_every_application_to_synced_and_healthy() {
    let lab = Lab::start().await;
    let list = ArgoApps { connection: lab.connection(), namespace: "argocd".into(), require_healthy: true };
    let apps: Vec<AppStatus> = run(&list, Duration::from_secs(10), "list").await.unwrap();
    let names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["api", "ingress-nginx", "web"]);
    assert!(apps.iter().all(|a| a.healthy() && !a.operation_in_progress), "{apps:?}");

    assert!(lab.sync(&[], true).probe(&ctx(Duration::from_secs(5), "p")).await.unwrap().is_some(), "all Synced/Healthy");
    let outcomes: Vec<SyncOutcome> = run(&lab.sync(&[], true), Duration::from_secs(20), "sync-all").await.unwrap();
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    for o in &outcomes {
        assert_eq!(o.outcome, "synced", "{o:?}");
        assert_eq!((o.status.sync.as_str(), o.status.health.as_str()), ("Synced", "Healthy"));
        assert_eq!(o.status.operation_phase.as_deref(), Some("Succeeded"));
        let app = lab.app(&o.name);
        assert!(app.get("operation").is_none(), "the operation was consumed: {app}");
        let op = &app["status"]["operationState"]["operation"];
        assert_eq!(op["initiatedBy"]["username"], "dr", "{app}");
        assert_eq!(op["info"][0]["name"], "dr-step", "dr's marker is on the finished operation: {app}");
        assert!(op["info"][0]["value"].as_str().unwrap().ends_with("/sync-all/1"), "{app}");
    }

    // A named application that does not exist is a permanent error.
    let error = run(&lab.sync(&["nope"], true), Duration::from_secs(5), "s").await.unwrap_err();
    assert!(!error.retryable && error.message.contains("nope"), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_is_refused_while_an_operation_is_in_progress_and_dr_takes_up_its_own() {
    let lab = Lab::start().await;
    // ArgoCD down: operations stay pending.
    lab.server.control("faults/argocd-down", json!({})).unwrap();
    // Someone else's operation on api (as the auto-sync would start it).
    {
        let client = lab.connection().connect().await.unwrap().client;
        let ar = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application"));
        let api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(client, "argocd", &ar);
        let patch = json!({"operation": {"initiatedBy": {"automated": true}, "sync": {"prune": true}}});
        api.patch("api", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await.unwrap();
    }
    let before = lab.app("api");

    let error = run(&lab.sync(&["api", "web"], true), Duration::from_secs(5), "s").await.unwrap_err();
    assert!(error.retryable, "{error:?}");
    assert!(error.message.contains("refused") && error.message.contains("api (") && error.message.contains("automated"), "{error:?}");
    assert!(!error.message.contains("web ("), "web has no operation: {error:?}");
    assert_eq!(lab.app("api")["operation"], before["operation"], "the running operation is untouched");
    assert!(lab.app("web").get("operation").is_none(), "nothing patched when refused");

    // web alone is allowed; not waited on, its operation stays pending while ArgoCD is down.
    let outcomes: Vec<SyncOutcome> = run(&lab.sync(&["web"], false), Duration::from_secs(5), "web").await.unwrap();
    assert_eq!(outcomes[0].outcome, "triggered");
    assert_eq!(lab.app("web")["operation"]["initiatedBy"]["username"], "dr");
    assert!(lab.sync(&["web"], true).probe(&ctx(Duration::from_secs(5), "p")).await.unwrap().is_none(), "an operation is pending");

    // The listing shows both in progress; as a check it fails.
    let list = ArgoApps { connection: lab.connection(), namespace: "argocd".into(), require_healthy: false };
    let apps: Vec<AppStatus> = run(&list, Duration::from_secs(5), "list").await.unwrap();
    let pending: Vec<&str> = apps.iter().filter(|a| a.operation_in_progress).map(|a| a.name.as_str()).collect();
    assert_eq!(pending, ["api", "web"]);

    // ArgoCD repaired as the guide does it (delete its pods), dr's pending sync of web is taken up and waited on.
    let repair = DeletePods { connection: lab.connection(), namespace: "argocd".into(), selector: None, wait: true };
    let deleted: DeletePodsReport = run(&repair, Duration::from_secs(20), "repair").await.unwrap();
    assert_eq!(deleted.deleted.len(), 3, "{deleted:?}");
    let outcomes: Vec<SyncOutcome> = run(&lab.sync(&["web"], true), Duration::from_secs(20), "web-again").await.unwrap();
    assert_eq!(outcomes[0].outcome, "synced", "{outcomes:?}");
    assert!(outcomes[0].status.healthy());

    // Once api's operation finished, a sync of api is accepted.
    let mut accepted = None;
    for _ in 0..200 {
        match run(&lab.sync(&["api"], true), Duration::from_secs(20), "api").await {
            Ok(outcomes) => {
                accepted = Some(outcomes);
                break;
            }
            Err(e) if e.message.contains("refused") => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("{e:?}"),
        }
    }
    let outcomes = accepted.expect("api's automated operation finishes once ArgoCD runs again");
    assert_eq!(outcomes[0].outcome, "synced", "{outcomes:?}");
}
