//! The standard objects of the homelab cluster: nodes, kube-system (coredns,
//! kube-proxy, kube-dns), ArgoCD and its Applications, and the manifests each
//! Application deploys when it syncs. Builders and the "kubeadm init / join /
//! platform deploy" effects; owns no controller logic.

use serde_json::{json, Value};
use tokio::time::Instant;

use super::resources::{self as r, ResourceType};
use super::store::now_rfc3339;
use super::{controllers, KubeletState, SimNode, World};

pub const ARGOCD_NS: &str = "argocd";
pub const APP_NS: &str = "demo";
pub const ARGOCD_COMPONENTS: &[&str] = &["argocd-server", "argocd-repo-server", "argocd-application-controller"];
pub const APPS: &[&str] = &["web", "api", "ingress-nginx"];
/// The deployment `pod-crash` breaks when no body names one.
pub const DEFAULT_CRASH: (&str, &str) = (APP_NS, "web");

/// Register the lab's nodes with the simulation (VMs exist, kubelets running, not yet joined).
pub fn register_nodes(world: &mut World) {
    let now = Instant::now();
    for (i, (name, ip)) in world.opts.nodes.clone().into_iter().enumerate() {
        world.sim.nodes.insert(
            name,
            SimNode { kubelet: KubeletState::Running, joined: false, control_plane: i == 0, ip, ready_at: now },
        );
    }
}

/// Build the standard, healthy cluster at once.
pub fn standard_cluster(world: &mut World) {
    world.sim.instant = true;
    cluster_init(world);
    let workers: Vec<String> = world.sim.nodes.iter().filter(|(_, n)| !n.control_plane).map(|(k, _)| k.clone()).collect();
    for w in workers {
        let _ = join(world, &w);
    }
    platform_deploy(world);
    controllers::settle(world);
    world.sim.instant = false;
}

fn ensure(world: &mut World, rt: &ResourceType, ns: &str, obj: Value) {
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
    if world.store.get(rt, ns, &name).is_none() {
        let _ = world.store.create(rt, ns, obj);
    }
}

pub fn ensure_namespace(world: &mut World, name: &str) {
    ensure(
        world,
        &r::NAMESPACES,
        "",
        json!({"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
    );
}

/// `kubeadm init`: API server up, control-plane node joined, kube-system objects.
pub fn cluster_init(world: &mut World) {
    world.sim.api_up = true;
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        ensure_namespace(world, ns);
    }
    ensure(
        world,
        &r::SERVICES,
        "default",
        json!({"metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
               "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
                        "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}}),
    );
    let cp: Vec<String> = world.sim.nodes.iter().filter(|(_, n)| n.control_plane).map(|(k, _)| k.clone()).collect();
    for name in cp {
        let _ = join(world, &name);
    }
    for component in ["scheduler", "controller-manager", "etcd-0"] {
        ensure(
            world,
            &r::COMPONENTSTATUSES,
            "",
            json!({"metadata": {"name": component}, "conditions": [{"type": "Healthy", "status": "True", "message": "ok"}]}),
        );
    }
    ensure(world, &r::DEPLOYMENTS, "kube-system", coredns());
    ensure(world, &r::DAEMONSETS, "kube-system", kube_proxy());
    ensure(
        world,
        &r::SERVICES,
        "kube-system",
        json!({"metadata": {"name": "kube-dns", "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
               "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "selector": {"k8s-app": "kube-dns"},
                        "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                                  {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                                  {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]}}),
    );
}

/// `kubeadm join` (or the control plane's own registration): the Node object exists and
/// turns Ready after the node delay if its kubelet runs.
pub fn join(world: &mut World, name: &str) -> Result<(), String> {
    let delay = world.delay(world.opts.node_ready_delay);
    let Some(node) = world.sim.nodes.get_mut(name) else {
        return Err(format!("unknown node {name:?}"));
    };
    if node.kubelet == KubeletState::Dead {
        return Err(format!("node {name:?} is dead; re-create it first"));
    }
    node.joined = true;
    node.kubelet = KubeletState::Running;
    node.ready_at = Instant::now() + delay;
    let node = node.clone();
    if world.store.get(&r::NODES, "", name).is_none() {
        let index = world.sim.nodes.keys().position(|k| k == name).unwrap_or(0);
        let _ = world.store.create(&r::NODES, "", node_object(name, &node, index));
    }
    Ok(())
}

fn node_object(name: &str, node: &SimNode, index: usize) -> Value {
    let mut labels = json!({"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                            "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64"});
    let mut taints = json!([]);
    if node.control_plane {
        labels["node-role.kubernetes.io/control-plane"] = json!("");
        labels["node.kubernetes.io/exclude-from-external-load-balancers"] = json!("");
        taints = json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]);
    }
    let now = now_rfc3339();
    let pressure = |t: &str, reason: &str| {
        json!({"type": t, "status": "False", "reason": reason, "message": "kubelet has no pressure",
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    json!({
        "metadata": {"name": name, "labels": labels,
                     "annotations": {"kubeadm.alpha.kubernetes.io/cri-socket": "unix:///var/run/containerd/containerd.sock",
                                     "node.alpha.kubernetes.io/ttl": "0"}},
        "spec": {"podCIDR": format!("10.244.{index}.0/24"), "podCIDRs": [format!("10.244.{index}.0/24")], "taints": taints},
        "status": {
            "conditions": [
                pressure("MemoryPressure", "KubeletHasSufficientMemory"),
                pressure("DiskPressure", "KubeletHasNoDiskPressure"),
                pressure("PIDPressure", "KubeletHasSufficientPID"),
                {"type": "Ready", "status": "False", "reason": "KubeletNotReady", "message": "container runtime status check may not have completed yet",
                 "lastHeartbeatTime": now, "lastTransitionTime": now}
            ],
            "addresses": [{"type": "InternalIP", "address": node.ip}, {"type": "Hostname", "address": name}],
            "capacity": {"cpu": "2", "memory": "4025836Ki", "pods": "110", "ephemeral-storage": "20511312Ki"},
            "allocatable": {"cpu": "2", "memory": "3923436Ki", "pods": "110", "ephemeral-storage": "18903225108"},
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {"architecture": "amd64", "bootID": format!("boot-{name}"), "containerRuntimeVersion": "containerd://1.7.24",
                         "kernelVersion": "6.1.0-28-amd64", "kubeProxyVersion": "v1.32.0", "kubeletVersion": "v1.32.0",
                         "machineID": format!("machine-{name}"), "operatingSystem": "linux",
                         "osImage": "Debian GNU/Linux 12 (bookworm)", "systemUUID": format!("uuid-{name}")}
        }
    })
}

fn deployment(name: &str, replicas: u32, labels: Value, image: &str, extra_pod_spec: Value, meta_labels: Value) -> Value {
    let mut spec = json!({"containers": [{"name": name.trim_start_matches("argocd-"), "image": image, "imagePullPolicy": "IfNotPresent",
                                          "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}, "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}],
                          "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
                          "terminationGracePeriodSeconds": 30, "securityContext": {}});
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), extra_pod_spec.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({
        "metadata": {"name": name, "labels": meta_labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels.clone()}, "revisionHistoryLimit": 10,
                 "progressDeadlineSeconds": 600,
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
                 "template": {"metadata": {"labels": labels}, "spec": spec}}
    })
}

/// A StatefulSet made of a `deployment(..)` skeleton: same pod template and selector,
/// `OrderedReady` pods with stable names behind the headless service `service`.
fn statefulset(mut workload: Value, service: &str) -> Value {
    if let Some(spec) = workload["spec"].as_object_mut() {
        spec.remove("strategy");
        spec.remove("progressDeadlineSeconds");
        spec.insert("serviceName".into(), json!(service));
        spec.insert("podManagementPolicy".into(), json!("OrderedReady"));
        spec.insert("updateStrategy".into(), json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}));
    }
    workload
}

fn coredns() -> Value {
    deployment(
        "coredns",
        2,
        json!({"k8s-app": "kube-dns"}),
        "registry.k8s.io/coredns/coredns:v1.11.3",
        json!({"priorityClassName": "system-cluster-critical", "serviceAccountName": "coredns",
               "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"},
                               {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]}),
        json!({"k8s-app": "kube-dns"}),
    )
}

fn kube_proxy() -> Value {
    let labels = json!({"k8s-app": "kube-proxy"});
    json!({
        "metadata": {"name": "kube-proxy", "labels": labels},
        "spec": {"selector": {"matchLabels": labels}, "revisionHistoryLimit": 10,
                 "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "kube-proxy", "image": "registry.k8s.io/kube-proxy:v1.32.0",
                                                       "command": ["/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/config.conf"],
                                                       "securityContext": {"privileged": true}}],
                                       "hostNetwork": true, "priorityClassName": "system-node-critical",
                                       "serviceAccountName": "kube-proxy", "restartPolicy": "Always",
                                       "tolerations": [{"operator": "Exists"}]}}}
    })
}

/// `platform-deploy.sh`: ArgoCD and its Applications (which sync themselves: automated policy).
pub fn platform_deploy(world: &mut World) {
    ensure_namespace(world, ARGOCD_NS);
    for component in ARGOCD_COMPONENTS {
        let labels = json!({"app.kubernetes.io/name": component});
        let meta_labels = json!({"app.kubernetes.io/name": component, "app.kubernetes.io/part-of": "argocd",
                                 "app.kubernetes.io/component": component.trim_start_matches("argocd-")});
        let workload = deployment(component, 1, labels.clone(), "quay.io/argoproj/argocd:v2.13.2", json!({}), meta_labels);
        if *component == "argocd-application-controller" {
            // Upstream's install.yaml runs the application controller as a StatefulSet.
            ensure(world, &r::STATEFULSETS, ARGOCD_NS, statefulset(workload, component));
        } else {
            ensure(world, &r::DEPLOYMENTS, ARGOCD_NS, workload);
            let port = if *component == "argocd-server" { 443 } else { 8081 };
            ensure(
                world,
                &r::SERVICES,
                ARGOCD_NS,
                json!({"metadata": {"name": component, "labels": {"app.kubernetes.io/name": component, "app.kubernetes.io/part-of": "argocd"}},
                       "spec": {"type": "ClusterIP", "selector": labels, "ports": [{"name": "https", "port": port, "protocol": "TCP", "targetPort": 8080}]}}),
            );
        }
    }
    for app in APPS {
        ensure(world, &r::APPLICATIONS, ARGOCD_NS, application(app));
    }
}

fn app_namespace(app: &str) -> &'static str {
    if app == "ingress-nginx" {
        "ingress-nginx"
    } else {
        APP_NS
    }
}

fn application(app: &str) -> Value {
    json!({
        "metadata": {"name": app, "finalizers": ["resources-finalizer.argocd.argoproj.io"]},
        "spec": {"project": "default",
                 "source": {"repoURL": "https://git.homelab.local/platform.git", "path": format!("apps/{app}"), "targetRevision": "HEAD"},
                 "destination": {"server": "https://kubernetes.default.svc", "namespace": app_namespace(app)},
                 "syncPolicy": {"automated": {"prune": true, "selfHeal": true}, "syncOptions": ["CreateNamespace=true"]}},
        "status": {"sync": {"status": "OutOfSync"}, "health": {"status": "Missing"}}
    })
}

/// What an Application deploys: (type, namespace, object).
pub fn app_manifests(app: &str) -> Vec<(ResourceType, String, Value)> {
    let ns = app_namespace(app).to_string();
    let instance = |mut v: Value| {
        v["metadata"]["labels"]["app.kubernetes.io/instance"] = json!(app);
        v
    };
    let mut out = Vec::new();
    match app {
        "web" => {
            let labels = json!({"app": "web"});
            out.push((r::DEPLOYMENTS, ns.clone(), instance(deployment("web", 2, labels.clone(), "nginx:1.27", json!({}), json!({"app": "web"})))));
            out.push((
                r::SERVICES,
                ns.clone(),
                instance(json!({"metadata": {"name": "web", "labels": {"app": "web"}},
                                "spec": {"type": "ClusterIP", "selector": labels, "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 80}]}})),
            ));
            out.push((
                r::PDBS,
                ns,
                instance(json!({"metadata": {"name": "web"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}})),
            ));
        }
        "api" => {
            let labels = json!({"app": "api"});
            out.push((r::DEPLOYMENTS, ns.clone(), instance(deployment("api", 2, labels.clone(), "ghcr.io/homelab/api:1.4.2", json!({}), json!({"app": "api"})))));
            // The api's cache: a StatefulSet (stable names, ordered pods) behind a headless service.
            let cache = json!({"app": "api-cache"});
            out.push((
                r::STATEFULSETS,
                ns.clone(),
                instance(statefulset(deployment("api-cache", 1, cache.clone(), "redis:7.4", json!({}), cache.clone()), "api-cache")),
            ));
            out.push((
                r::SERVICES,
                ns.clone(),
                instance(json!({"metadata": {"name": "api-cache", "labels": cache},
                                "spec": {"clusterIP": "None", "selector": cache, "ports": [{"name": "redis", "port": 6379, "protocol": "TCP", "targetPort": 6379}]}})),
            ));
            out.push((
                r::SERVICES,
                ns,
                instance(json!({"metadata": {"name": "api", "labels": {"app": "api"}},
                                "spec": {"type": "ClusterIP", "selector": labels, "ports": [{"name": "http", "port": 8080, "protocol": "TCP", "targetPort": 8080}]}})),
            ));
        }
        "ingress-nginx" => {
            let labels = json!({"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/component": "controller"});
            out.push((
                r::DEPLOYMENTS,
                ns.clone(),
                instance(deployment("ingress-nginx-controller", 1, labels.clone(), "registry.k8s.io/ingress-nginx/controller:v1.12.0", json!({}), labels.clone())),
            ));
            out.push((
                r::SERVICES,
                ns,
                instance(json!({"metadata": {"name": "ingress-nginx-controller", "labels": labels},
                                "spec": {"type": "LoadBalancer", "selector": labels, "loadBalancerIP": "192.168.122.100",
                                         "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 80}]}})),
            ));
        }
        _ => {}
    }
    out
}
