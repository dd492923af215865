//! kube-rs against the simulated API server: every resource kind lists, gets,
//! patches and watches; watches replay and expire; waits and evictions work;
//! errors come back as `Status` objects with the right codes.

use std::time::Duration;

use dr_lab::kube::{ApiServer, KubeOptions};
use futures::TryStreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Event, Namespace, Node, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{
    Api, DeleteParams, DynamicObject, EvictParams, GroupVersionKind, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::core::ApiResource;
use kube::runtime::{wait::await_condition, watcher, WatchStreamExt};
use kube::{Client, Config};
use serde_json::json;

async fn start(opts: KubeOptions) -> (ApiServer, Client, tempfile::TempDir) {
    let server = ApiServer::start(opts).await.expect("api server starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path).expect("kubeconfig written");
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("kubeconfig parses");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await.expect("config");
    // kube 5 retries 429/503 by default with long backoffs; a PDB-blocked eviction must surface at once.
    config.default_retry = false;
    let client = Client::try_from(config).expect("client");
    (server, client, dir)
}

fn application_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application"), "applications")
}

fn label_patch() -> Patch<serde_json::Value> {
    Patch::Merge(json!({"metadata": {"labels": {"dr-test": "patched"}}}))
}

macro_rules! check_kind {
    ($client:expr, $ty:ty, namespaced) => {{
        let all: Api<$ty> = Api::all($client.clone());
        let list = all.list(&ListParams::default()).await.expect(concat!("list ", stringify!($ty)));
        assert!(!list.items.is_empty(), concat!("no ", stringify!($ty)));
        let first = &list.items[0];
        let ns = first.metadata.namespace.clone().expect("namespaced");
        let name = first.metadata.name.clone().expect("named");
        let api: Api<$ty> = Api::namespaced($client.clone(), &ns);
        let got = api.get(&name).await.expect(concat!("get ", stringify!($ty)));
        assert_eq!(got.metadata.uid, first.metadata.uid);
        let patched = api.patch(&name, &PatchParams::default(), &label_patch()).await.expect(concat!("patch ", stringify!($ty)));
        assert_eq!(patched.metadata.labels.as_ref().and_then(|l| l.get("dr-test")).map(String::as_str), Some("patched"));
        let selected = api.list(&ListParams::default().labels("dr-test=patched")).await.expect("list by label");
        assert_eq!(selected.items.len(), 1, concat!("label selector on ", stringify!($ty)));
    }};
    ($client:expr, $ty:ty, cluster) => {{
        let api: Api<$ty> = Api::all($client.clone());
        let list = api.list(&ListParams::default()).await.expect(concat!("list ", stringify!($ty)));
        assert!(!list.items.is_empty(), concat!("no ", stringify!($ty)));
        let name = list.items[0].metadata.name.clone().expect("named");
        api.get(&name).await.expect(concat!("get ", stringify!($ty)));
        let patched = api.patch(&name, &PatchParams::default(), &label_patch()).await.expect(concat!("patch ", stringify!($ty)));
        assert_eq!(patched.metadata.labels.as_ref().and_then(|l| l.get("dr-test")).map(String::as_str), Some("patched"));
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_lists_gets_and_patches_every_resource_kind() {
    let (_server, client, _dir) = start(KubeOptions::default()).await;
    check_kind!(client, Node, cluster);
    check_kind!(client, Namespace, cluster);
    check_kind!(client, Pod, namespaced);
    check_kind!(client, Endpoints, namespaced);
    check_kind!(client, Service, namespaced);
    check_kind!(client, Event, namespaced);
    check_kind!(client, Deployment, namespaced);
    check_kind!(client, DaemonSet, namespaced);
    check_kind!(client, ReplicaSet, namespaced);
    check_kind!(client, PodDisruptionBudget, namespaced);

    let apps: Api<DynamicObject> = Api::namespaced_with(client.clone(), "argocd", &application_resource());
    let list = apps.list(&ListParams::default()).await.expect("list applications");
    let names: Vec<String> = list.items.iter().filter_map(|a| a.metadata.name.clone()).collect();
    assert!(names.contains(&"web".to_string()), "{names:?}");
    for app in &list.items {
        assert_eq!(app.data["status"]["sync"]["status"], "Synced");
        assert_eq!(app.data["status"]["health"]["status"], "Healthy");
    }
    let patched = apps.patch("web", &PatchParams::default(), &label_patch()).await.expect("patch application");
    assert_eq!(patched.metadata.labels.as_ref().and_then(|l| l.get("dr-test")).map(String::as_str), Some("patched"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_cluster_spreads_workloads_and_fills_dns_endpoints() {
    let (_server, client, _dir) = start(KubeOptions::default()).await;
    let pods: Api<Pod> = Api::all(client.clone());
    let on_worker_1 = pods.list(&ListParams::default().fields("spec.nodeName=k8s-worker-1")).await.expect("list");
    let on_worker_2 = pods.list(&ListParams::default().fields("spec.nodeName=k8s-worker-2")).await.expect("list");
    let app_pods = |l: &kube::core::ObjectList<Pod>| {
        l.items.iter().filter(|p| p.metadata.namespace.as_deref() == Some("demo")).count()
    };
    assert!(app_pods(&on_worker_1) >= 1 && app_pods(&on_worker_2) >= 1, "workloads on both workers");
    let not_running = pods.list(&ListParams::default().fields("status.phase!=Running")).await.expect("list");
    assert!(not_running.items.is_empty(), "every pod runs at start");
    let dns = pods.list(&ListParams::default().labels("k8s-app in (kube-dns),tier!=x")).await.expect("list");
    assert_eq!(dns.items.len(), 2);
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "kube-system");
    let ep = endpoints.get("kube-dns").await.expect("kube-dns endpoints");
    let mut ep_ips: Vec<String> =
        ep.subsets.unwrap_or_default().iter().flat_map(|s| s.addresses.clone().unwrap_or_default()).map(|a| a.ip).collect();
    let mut pod_ips: Vec<String> = dns.items.iter().filter_map(|p| p.status.as_ref()?.pod_ip.clone()).collect();
    ep_ips.sort();
    pod_ips.sort();
    assert_eq!(ep_ips, pod_ips);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_sees_modified_event_after_a_patch() {
    let (_server, client, _dir) = start(KubeOptions::default()).await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), "demo");
    let stream = watcher(api.clone(), watcher::Config::default().fields("metadata.name=api")).applied_objects();
    let mut stream = Box::pin(stream);
    let first = tokio::time::timeout(Duration::from_secs(5), stream.try_next()).await.expect("initial").expect("ok").expect("some");
    assert_eq!(first.metadata.name.as_deref(), Some("api"));
    api.patch("api", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"dr-test/watched": "yes"}}})))
        .await
        .expect("patch");
    let seen = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(d) = stream.try_next().await.expect("watch ok") {
            if d.metadata.annotations.as_ref().and_then(|a| a.get("dr-test/watched")).is_some() {
                return d;
            }
        }
        panic!("watch ended");
    })
    .await
    .expect("the watcher sees the patch");
    assert_eq!(seen.metadata.name.as_deref(), Some("api"));

    // A raw watch from the list's resourceVersion replays exactly the later change.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let rv = cms.list(&ListParams::default()).await.expect("list").metadata.resource_version.expect("rv");
    cms.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "replayed"}, "data": {"a": "1"}})).expect("cm"))
        .await
        .expect("create");
    let mut events = Box::pin(cms.watch(&WatchParams::default().timeout(5), &rv).await.expect("watch"));
    match tokio::time::timeout(Duration::from_secs(5), events.try_next()).await.expect("event").expect("ok") {
        Some(WatchEvent::Added(cm)) => assert_eq!(cm.metadata.name.as_deref(), Some("replayed")),
        other => panic!("expected ADDED replayed, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_an_expired_resource_version_gets_410_gone() {
    let (_server, client, _dir) = start(KubeOptions { history_limit: 20, ..KubeOptions::default() }).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..30 {
        cms.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": format!("cm-{i}")}})).expect("cm"))
            .await
            .expect("create");
    }
    let mut events = Box::pin(cms.watch(&WatchParams::default().timeout(5), "2").await.expect("watch"));
    match tokio::time::timeout(Duration::from_secs(5), events.try_next()).await.expect("event").expect("ok") {
        Some(WatchEvent::Error(status)) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn await_condition_sees_a_new_pod_become_ready() {
    let opts = KubeOptions { pod_ready_delay: Duration::from_millis(400), ..KubeOptions::default() };
    let (_server, client, _dir) = start(opts).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "probe"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
        .expect("pod");
    pods.create(&PostParams::default(), &pod).await.expect("create");
    let is_ready = |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready").map(|c| c.status == "True"))
            .unwrap_or(false)
    };
    assert!(!is_ready(Some(&pods.get("probe").await.expect("get"))), "not ready before the delay");
    let ready = tokio::time::timeout(Duration::from_secs(10), await_condition(pods.clone(), "probe", is_ready))
        .await
        .expect("ready in time")
        .expect("watch ok")
        .expect("pod exists");
    let status = ready.status.expect("status");
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert!(ready.spec.and_then(|s| s.node_name).is_some_and(|n| n.starts_with("k8s-worker-")), "scheduled on a worker");
    assert!(status.container_statuses.unwrap_or_default().iter().all(|c| c.ready));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_come_back_as_status_objects_with_their_codes() {
    let (_server, client, _dir) = start(KubeOptions::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let code_reason = |e: kube::Error| match e {
        kube::Error::Api(s) => (s.code, s.reason),
        other => panic!("not an api error: {other:?}"),
    };
    assert_eq!(code_reason(cms.get("absent").await.expect_err("404")), (404, "NotFound".to_string()));
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "once"}})).expect("cm");
    let created = cms.create(&PostParams::default(), &cm).await.expect("create");
    assert_eq!(code_reason(cms.create(&PostParams::default(), &cm).await.expect_err("409")), (409, "AlreadyExists".to_string()));
    let mut stale = created.clone();
    cms.patch("once", &PatchParams::default(), &Patch::Merge(json!({"data": {"x": "1"}}))).await.expect("patch");
    stale.data = Some([("y".to_string(), "2".to_string())].into());
    assert_eq!(code_reason(cms.replace("once", &PostParams::default(), &stale).await.expect_err("conflict")), (409, "Conflict".to_string()));
    let nameless: ConfigMap = serde_json::from_value(json!({"metadata": {}})).expect("cm");
    assert_eq!(code_reason(cms.create(&PostParams::default(), &nameless).await.expect_err("422")), (422, "Invalid".to_string()));
    let bad_patch = Patch::Json::<()>(serde_json::from_value(json!([{"op": "test", "path": "/data/x", "value": "nope"}])).expect("patch"));
    assert_eq!(code_reason(cms.patch("once", &PatchParams::default(), &bad_patch).await.expect_err("422")).0, 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_patch_update_and_deletecollection_work() {
    let (_server, client, _dir) = start(KubeOptions::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for (name, tier) in [("a", "x"), ("b", "x"), ("c", "y")] {
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": name, "labels": {"tier": tier}}, "data": {"k": "v"}})).expect("cm");
        cms.create(&PostParams::default(), &cm).await.expect("create");
    }
    let ops = Patch::Json::<()>(
        serde_json::from_value(json!([{"op": "replace", "path": "/data/k", "value": "w"}, {"op": "add", "path": "/data/n", "value": "1"}]))
            .expect("patch"),
    );
    let patched = cms.patch("a", &PatchParams::default(), &ops).await.expect("json patch");
    let data = patched.data.expect("data");
    assert_eq!((data["k"].as_str(), data["n"].as_str()), ("w", "1"));
    let mut replaced = cms.get("c").await.expect("get");
    replaced.data = Some([("k".to_string(), "replaced".to_string())].into());
    let replaced = cms.replace("c", &PostParams::default(), &replaced).await.expect("update");
    assert_eq!(replaced.data.expect("data")["k"], "replaced");
    cms.delete_collection(&DeleteParams::default(), &ListParams::default().labels("tier=x")).await.expect("deletecollection");
    let left: Vec<String> = cms.list(&ListParams::default()).await.expect("list").items.into_iter().filter_map(|c| c.metadata.name).collect();
    assert_eq!(left, vec!["c".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_blocked_by_a_pdb_returns_429_and_keeps_the_pod() {
    let (server, client, _dir) = start(KubeOptions::default()).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let solo: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "solo"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "solo"}},
                 "template": {"metadata": {"labels": {"app": "solo"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
    }))
    .expect("deployment");
    deployments.create(&PostParams::default(), &solo).await.expect("create deployment");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    let pdb: PodDisruptionBudget =
        serde_json::from_value(json!({"metadata": {"name": "solo"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "solo"}}}}))
            .expect("pdb");
    pdbs.create(&PostParams::default(), &pdb).await.expect("create pdb");
    server.wait_healthy(Duration::from_secs(5)).await.expect("healthy");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let ready_pod = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let list = pods.list(&ListParams::default().labels("app=solo")).await.expect("list");
            if let Some(p) = list.items.iter().find(|p| {
                p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            }) {
                return p.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("solo pod ready");
    let name = ready_pod.metadata.name.clone().expect("name");
    match pods.evict(&name, &EvictParams::default()).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 429);
            assert_eq!(status.reason, "TooManyRequests");
            assert!(status.message.contains("disruption budget"), "{}", status.message);
        }
        other => panic!("expected 429, got {other:?}"),
    }
    assert_eq!(pods.get(&name).await.expect("still there").metadata.uid, ready_pod.metadata.uid);

    // A budget with room lets the eviction through.
    let web: Api<Pod> = Api::namespaced(client.clone(), "demo");
    let victim = web.list(&ListParams::default().labels("app=web")).await.expect("list").items[0].metadata.name.clone().expect("name");
    web.evict(&victim, &EvictParams::default()).await.expect("eviction allowed");
    assert!(web.get_opt(&victim).await.expect("get").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_speaks_https_with_the_lab_ca_and_refuses_an_untrusted_server() {
    let (server, client, dir) = start(KubeOptions { tls: true, ..KubeOptions::default() }).await;
    assert!(server.url().starts_with("https://"));
    assert!(server.kubeconfig().contains("certificate-authority-data:"));
    let nodes: Api<Node> = Api::all(client.clone());
    assert_eq!(nodes.list(&ListParams::default()).await.expect("list over https").items.len(), 3);

    // Without the CA the same server is not trusted.
    let untrusted = server.kubeconfig().lines().filter(|l| !l.contains("certificate-authority-data")).collect::<Vec<_>>().join("\n");
    let path = dir.path().join("untrusted");
    std::fs::write(&path, untrusted).expect("write");
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("parses");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await.expect("config");
    config.default_retry = false;
    let nodes: Api<Node> = Api::all(Client::try_from(config).expect("client"));
    assert!(nodes.list(&ListParams::default()).await.is_err(), "an unknown CA must be refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_with_streaming_lists_gets_initial_events_and_then_changes() {
    let (_server, client, _dir) = start(KubeOptions::default()).await;
    let nodes: Api<Node> = Api::all(client.clone());
    let stream = watcher(nodes.clone(), watcher::Config::default().streaming_lists());
    let mut stream = Box::pin(stream);
    let mut initial = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(event) = stream.try_next().await.expect("watch ok") {
            match event {
                watcher::Event::InitApply(n) => initial.push(n.metadata.name.unwrap_or_default()),
                watcher::Event::InitDone => return,
                _ => {}
            }
        }
    })
    .await
    .expect("initial events end with a bookmark");
    initial.sort();
    assert_eq!(initial, vec!["k8s-control-plane-1", "k8s-worker-1", "k8s-worker-2"]);
    nodes.patch("k8s-worker-2", &PatchParams::default(), &Patch::Merge(json!({"spec": {"unschedulable": true}}))).await.expect("cordon");
    let cordoned = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(event) = stream.try_next().await.expect("watch ok") {
            if let watcher::Event::Apply(n) = event {
                if n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
                    return n;
                }
            }
        }
        panic!("watch ended");
    })
    .await
    .expect("the cordon is seen");
    assert_eq!(cordoned.metadata.name.as_deref(), Some("k8s-worker-2"));
}
