//! The platform health report of a lab directory (what `dr-lab status`
//! prints): whether each part runs, a top-level `healthy` for the whole
//! platform with one entry per check, the faults in effect, whether the API
//! answers, each node's Kubernetes status apart from its sshd (the VM), and
//! `etcd_marker`, the value of `/lab/backup/marker` in etcd now (the backup
//! the data came from).
//!
//! Owns reading the lab from outside, through its directory (pid files,
//! `lab.json`) and its endpoints, as an operator would. Refuses changing
//! anything.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use super::etcd::EtcdClient;
use super::process::{pid_alive, read_pid};
use super::{http, Summary, CONTROL_PLANE};

/// The checks of `healthy`, in the order they are shown.
pub const CHECKS: &[&str] = &["api", "nodes", "kube_system", "argocd", "ingress", "etcd", "sshd"];

fn check(ok: bool, detail: impl Into<String>) -> Value {
    json!({ "ok": ok, "detail": detail.into() })
}

fn supervisor_pid(dir: &Path) -> Option<i32> {
    read_pid(&dir.join("supervisor.pid")).filter(|pid| pid_alive(*pid))
}

/// The report of the lab in `dir` (see `docs/LAB.md`, "Status").
pub fn report(dir: &Path) -> Value {
    let summary: Option<Summary> = std::fs::read_to_string(dir.join("lab.json")).ok().and_then(|t| serde_json::from_str(&t).ok());
    let supervisor = supervisor_pid(dir);
    let etcd_pid = read_pid(&dir.join("etcd/etcd.pid")).filter(|p| pid_alive(*p));
    let etcd_healthy = etcd_pid.is_some()
        && Command::new(dir.join("etcd/run.sh")).arg("health").stdin(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    let mut nodes = Vec::new();
    if let Some(summary) = &summary {
        for node in &summary.nodes {
            let pid = read_pid(&dir.join("sshd").join(&node.name).join("sshd.pid")).filter(|p| pid_alive(*p));
            nodes.push(json!({ "name": node.name, "ssh_host": node.ssh_host, "ssh_port": node.ssh_port, "sshd_pid": pid, "sshd_up": pid.is_some() }));
        }
    }
    let (api_url, ingress_url) = summary.as_ref().map(|s| (s.api_url.clone(), s.ingress_url.clone())).unwrap_or_default();
    let health: Option<Value> = (!api_url.is_empty())
        .then(|| http::request("GET", &format!("{api_url}/lab/v1/health"), None).ok())
        .flatten()
        .filter(|(code, _)| *code == 200)
        .and_then(|(_, body)| serde_json::from_str(&body).ok());
    let ingress_status = if ingress_url.is_empty() { 0 } else { http::request("GET", &ingress_url, None).map(|(code, _)| code).unwrap_or(0) };

    // The checks.
    let api = match (api_url.is_empty(), http::request("GET", &format!("{api_url}/api/v1/nodes"), None)) {
        (true, _) => check(false, "no lab.json"),
        (false, Ok((200, _))) => check(true, "GET /api/v1/nodes answered 200"),
        (false, Ok((code, body))) => {
            let message = serde_json::from_str::<Value>(&body).ok().and_then(|v| v["message"].as_str().map(str::to_string)).unwrap_or(body);
            check(false, format!("GET /api/v1/nodes answered {code}: {}", message.trim()))
        }
        (false, Err(e)) => check(false, format!("{e:#}")),
    };
    let h = health.clone().unwrap_or(Value::Null);
    for node in &mut nodes {
        let known = h["nodes"].as_array().and_then(|list| list.iter().find(|n| n["name"] == node["name"]));
        node["kubernetes"] = json!(known.map_or("unknown".to_string(), kubernetes_status));
        node["kubelet"] = known.map_or(Value::Null, |n| n["kubelet"].clone());
    }
    let nodes_check = match h["nodes"].as_array() {
        None => check(false, "the API gave no node health"),
        Some(list) => {
            let bad: Vec<String> = list
                .iter()
                .filter(|n| !(n["registered"] == true && n["ready"] == true && n["unschedulable"] != true))
                .map(|n| {
                    let state = if n["registered"] != true {
                        "not registered"
                    } else if n["ready"] != true {
                        "NotReady"
                    } else {
                        "SchedulingDisabled"
                    };
                    format!("{} {state}", n["name"].as_str().unwrap_or_default())
                })
                .collect();
            if list.is_empty() {
                check(false, "no nodes")
            } else if bad.is_empty() {
                check(true, format!("{} nodes Ready and schedulable", list.len()))
            } else {
                check(false, bad.join(", "))
            }
        }
    };
    let kube_system = if h["kube_system_ready"] == true {
        check(true, "every kube-system pod Ready")
    } else {
        let unready: Vec<&str> =
            h["unready_pods"].as_array().map(|a| a.iter().filter_map(Value::as_str).filter(|p| p.starts_with("kube-system/")).collect()).unwrap_or_default();
        check(false, if unready.is_empty() { "kube-system not ready".to_string() } else { format!("not Ready: {}", unready.join(", ")) })
    };
    let argocd = {
        let apps = h["apps"].as_array().cloned().unwrap_or_default();
        let bad: Vec<String> = apps
            .iter()
            .filter(|a| !(a["sync"] == "Synced" && a["health"] == "Healthy"))
            .map(|a| format!("{} {}/{}", a["name"].as_str().unwrap_or_default(), a["sync"].as_str().unwrap_or("?"), a["health"].as_str().unwrap_or("?")))
            .collect();
        if h["argocd_ready"] != true {
            check(false, "argocd not ready")
        } else if apps.is_empty() {
            check(false, "no Applications")
        } else if !bad.is_empty() {
            check(false, bad.join(", "))
        } else {
            check(true, format!("{} Applications Synced/Healthy", apps.len()))
        }
    };
    let ingress = check(ingress_status == 200, format!("{ingress_url} answered {ingress_status}"));
    let etcd = check(etcd_healthy, match etcd_pid {
        Some(pid) if etcd_healthy => format!("pid {pid} healthy"),
        Some(pid) => format!("pid {pid} unhealthy"),
        None => "not running".to_string(),
    });
    let down: Vec<&str> = nodes.iter().filter(|n| n["sshd_up"] != true).filter_map(|n| n["name"].as_str()).collect();
    let sshd = check(!nodes.is_empty() && down.is_empty(), if down.is_empty() { "every node's sshd runs".to_string() } else { format!("down: {}", down.join(", ")) });
    let checks = json!({
        "api": api, "nodes": nodes_check, "kube_system": kube_system, "argocd": argocd,
        "ingress": ingress, "etcd": etcd, "sshd": sshd,
    });
    let healthy = CHECKS.iter().all(|c| checks[c]["ok"] == true);
    let api_answers = checks["api"]["ok"] == true;
    let faults = active_faults(dir, health.as_ref(), &nodes, etcd_healthy);
    let etcd_marker = summary.as_ref().filter(|_| etcd_healthy).and_then(|s| {
        let client = EtcdClient {
            endpoint: s.etcd.endpoints.first()?.clone(),
            cacert: s.etcd.cacert.clone(),
            cert: s.etcd.cert.clone(),
            key: s.etcd.key.clone(),
        };
        client.get("/lab/backup/marker").ok().flatten()
    });
    json!({
        "dir": dir,
        "running": supervisor.is_some(),
        "supervisor_pid": supervisor,
        "healthy": healthy,
        "checks": checks,
        "faults": faults,
        "etcd_marker": etcd_marker,
        "api": { "url": api_url, "answers": api_answers },
        "etcd": { "pid": etcd_pid, "healthy": etcd_healthy },
        "nodes": nodes,
        "ingress": { "url": ingress_url, "status": ingress_status },
    })
}

/// The report as `dr-lab status` shows it.
pub fn render_text(report: &Value) -> String {
    let mut out = String::new();
    let dir = report["dir"].as_str().unwrap_or_default();
    let running = if report["running"] == true { "running" } else { "no supervisor" };
    let healthy = if report["healthy"] == true { "healthy" } else { "UNHEALTHY" };
    out.push_str(&format!("lab {dir}: {running}, platform {healthy}\n"));
    let faults: Vec<String> = report["faults"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|f| {
                    let mut line = f["name"].as_str().unwrap_or_default().to_string();
                    if let Some(target) = f["target"].as_str() {
                        line.push_str(&format!(" {target}"));
                    }
                    if let Some(since) = f["since"].as_str() {
                        line.push_str(&format!(" (since {since})"));
                    }
                    line
                })
                .collect()
        })
        .unwrap_or_default();
    out.push_str(&format!("  {:<12} {}\n", "faults", if faults.is_empty() { "none".to_string() } else { faults.join(", ") }));
    for name in CHECKS {
        let c = &report["checks"][name];
        out.push_str(&format!("  {:<12} {:<4} {}\n", name, if c["ok"] == true { "ok" } else { "FAIL" }, c["detail"].as_str().unwrap_or_default()));
    }
    out.push_str(&format!("  etcd marker  {}\n", report["etcd_marker"].as_str().unwrap_or("(none)")));
    out.push_str(&format!("  api          {}\n", report["api"]["url"].as_str().unwrap_or_default()));
    if let Some(nodes) = report["nodes"].as_array() {
        for node in nodes {
            let kubelet = match node["kubelet"].as_str() {
                Some(state) if state != "running" => format!(" (kubelet {state})"),
                _ => String::new(),
            };
            out.push_str(&format!(
                "  {:<20} {:<17} sshd {:<4} kubernetes {}{kubelet}\n",
                node["name"].as_str().unwrap_or_default(),
                format!("{}:{}", node["ssh_host"].as_str().unwrap_or_default(), node["ssh_port"]),
                if node["sshd_up"] == true { "up" } else { "down" },
                node["kubernetes"].as_str().unwrap_or("unknown"),
            ));
        }
    }
    out
}

/// A node's STATUS as `kubectl get nodes` shows it (`Ready`, `NotReady`,
/// `Ready,SchedulingDisabled`), or `not registered`, from its entry in the
/// API's health.
fn kubernetes_status(node: &Value) -> String {
    if node["registered"] != true {
        return "not registered".to_string();
    }
    let ready = if node["ready"] == true { "Ready" } else { "NotReady" };
    if node["unschedulable"] == true {
        format!("{ready},SchedulingDisabled")
    } else {
        ready.to_string()
    }
}

/// One line of `DIR/faults.log`: `TIMESTAMP NAME [ARG]`.
struct Logged {
    since: String,
    name: String,
    target: Option<String>,
}

/// The faults logged in `DIR/faults.log`, the latest injection of each (name, target) once,
/// oldest first.
fn logged_faults(dir: &Path) -> Vec<Logged> {
    let text = std::fs::read_to_string(dir.join("faults.log")).unwrap_or_default();
    let mut logged: Vec<Logged> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(since), Some(name)) = (words.next(), words.next()) else { continue };
        let target = words.next().map(str::to_string);
        logged.retain(|l| !(l.name == name && l.target == target));
        logged.push(Logged { since: since.to_string(), name: name.to_string(), target });
    }
    logged
}

fn fault(name: &str, target: Option<&str>, since: Option<&str>, detail: impl Into<String>) -> Value {
    json!({ "name": name, "target": target, "since": since, "detail": detail.into() })
}

/// The faults in effect, as the lab sees them: the Kubernetes-side faults the API still
/// applies (its health's `faults`), and each node-side fault logged in `DIR/faults.log`
/// whose effect is still there (the kubelet stopped or dead, etcd unhealthy, the control
/// plane's or a node's sshd down, the API waiting for `kubeadm init`, the host setup gone).
fn active_faults(dir: &Path, health: Option<&Value>, nodes: &[Value], etcd_healthy: bool) -> Vec<Value> {
    let logged = logged_faults(dir);
    let last_since = |name: &str| logged.iter().filter(|l| l.name == name).map(|l| l.since.as_str()).max();
    let mut active = Vec::new();
    if let Some(h) = health {
        let f = &h["faults"];
        if let Some(workload) = f["pod-crash"].as_str() {
            active.push(fault("pod-crash", Some(workload), last_since("pod-crash"), format!("pods of {workload} crash")));
        }
        if f["network"].is_object() {
            let not_restarted: Vec<&str> = [("kube_proxy_restarted", "kube-proxy"), ("coredns_restarted", "coredns")]
                .into_iter()
                .filter(|(key, _)| f["network"][key] != true)
                .map(|(_, what)| what)
                .collect();
            active.push(fault("network", None, last_since("network"), format!("not restarted yet: {}", not_restarted.join(", "))));
        }
        if f["argocd-down"] == true {
            active.push(fault("argocd-down", None, last_since("argocd-down"), "ArgoCD's pods are down"));
        }
    }
    let api_down = health.is_some_and(|h| h["api_up"] == false);
    let sshd_down: Vec<&str> = nodes.iter().filter(|n| n["sshd_up"] != true).filter_map(|n| n["name"].as_str()).collect();
    let node_run = |node: &str| -> PathBuf { dir.join("nodes").join(node).join("run") };
    for l in &logged {
        let target = l.target.as_deref();
        let detail = match (l.name.as_str(), target) {
            ("worker-down", Some(node)) => {
                let unit = std::fs::read_to_string(node_run(node).join("units/kubelet")).unwrap_or_default();
                (unit.trim() == "inactive").then(|| format!("{node}'s kubelet is stopped"))
            }
            ("worker-dead", Some(node)) => {
                node_run(node).join("kubelet.dead").exists().then(|| format!("{node}'s kubelet is dead until the VM is re-created"))
            }
            // A later control-plane-lost or host-lost wiped the garbled data dir with the rest.
            ("etcd-corrupt", _) => {
                let wiped = logged.iter().any(|w| matches!(w.name.as_str(), "control-plane-lost" | "host-lost") && w.since > l.since);
                (!etcd_healthy && !wiped).then(|| "etcd is not healthy".to_string())
            }
            ("control-plane-lost", _) => {
                let mut missing = Vec::new();
                if sshd_down.contains(&CONTROL_PLANE) {
                    missing.push(format!("{CONTROL_PLANE}'s sshd is down"));
                }
                if api_down {
                    missing.push("the API waits for kubeadm init".to_string());
                }
                (!missing.is_empty()).then(|| missing.join("; "))
            }
            ("host-lost", _) => {
                let mut missing = Vec::new();
                if !sshd_down.is_empty() {
                    missing.push(format!("sshd down: {}", sshd_down.join(", ")));
                }
                let setup: Vec<&str> = ["packages", "libvirt", "storage"].into_iter().filter(|m| !dir.join("host").join(m).exists()).collect();
                if !setup.is_empty() {
                    missing.push(format!("host setup missing: {}", setup.join(", ")));
                }
                if api_down {
                    missing.push("the API waits for kubeadm init".to_string());
                }
                (!missing.is_empty()).then(|| missing.join("; "))
            }
            _ => None,
        };
        if let Some(detail) = detail {
            active.push(fault(&l.name, target, Some(&l.since), detail));
        }
    }
    active.sort_by(|a, b| a["since"].as_str().cmp(&b["since"].as_str()));
    active
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_shows_the_faults_and_each_node_s_kubernetes_status_apart_from_its_sshd() {
        let report = json!({
            "dir": "/lab", "running": true, "healthy": false,
            "checks": {"api": {"ok": true, "detail": "GET /api/v1/nodes answered 200"}, "nodes": {"ok": false, "detail": "k8s-worker-1 NotReady"}},
            "faults": [{"name": "worker-down", "target": "k8s-worker-1", "since": "2026-12-01T09:30:00.000Z", "detail": "k8s-worker-1's kubelet is stopped"},
                       {"name": "network", "target": null, "since": null, "detail": "not restarted yet: coredns"}],
            "api": {"url": "http://127.0.0.1:1", "answers": true},
            "nodes": [{"name": "k8s-worker-1", "ssh_host": "127.0.0.11", "ssh_port": 2, "sshd_up": true, "kubernetes": "NotReady", "kubelet": "stopped"},
                      {"name": "k8s-worker-2", "ssh_host": "127.0.0.12", "ssh_port": 3, "sshd_up": false, "kubernetes": "Ready,SchedulingDisabled", "kubelet": "running"}],
        });
        let text = render_text(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "lab /lab: running, platform UNHEALTHY");
        assert_eq!(lines[1], "  faults       worker-down k8s-worker-1 (since 2026-12-01T09:30:00.000Z), network");
        assert!(lines[2].starts_with("  api          ok   GET /api/v1/nodes answered 200"), "{text}");
        assert!(text.contains("  k8s-worker-1         127.0.0.11:2      sshd up   kubernetes NotReady (kubelet stopped)\n"), "{text}");
        assert!(text.contains("  k8s-worker-2         127.0.0.12:3      sshd down kubernetes Ready,SchedulingDisabled\n"), "{text}");
        let healthy = json!({"faults": [], "checks": {}, "nodes": []});
        assert!(render_text(&healthy).contains("  faults       none\n"));
    }

    #[test]
    fn a_node_s_status_reads_as_kubectl_shows_it() {
        let status = |n: Value| kubernetes_status(&n);
        assert_eq!(status(json!({"registered": true, "ready": true, "unschedulable": false})), "Ready");
        assert_eq!(status(json!({"registered": true, "ready": false})), "NotReady");
        assert_eq!(status(json!({"registered": true, "ready": true, "unschedulable": true})), "Ready,SchedulingDisabled");
        assert_eq!(status(json!({"registered": false, "ready": false})), "not registered");
    }

    #[test]
    fn the_log_keeps_the_latest_injection_of_each_fault_and_target() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = "2026-12-01T09:00:00.000Z worker-down k8s-worker-1\n2026-12-01T09:01:00.000Z etcd-corrupt \n\
                   2026-12-01T09:02:00.000Z worker-down k8s-worker-2\n2026-12-01T09:03:00.000Z worker-down k8s-worker-1\n";
        std::fs::write(dir.path().join("faults.log"), log).expect("write");
        let got: Vec<(String, Option<String>, String)> = logged_faults(dir.path()).into_iter().map(|l| (l.name, l.target, l.since)).collect();
        let expect = [
            ("etcd-corrupt", None, "2026-12-01T09:01:00.000Z"),
            ("worker-down", Some("k8s-worker-2"), "2026-12-01T09:02:00.000Z"),
            ("worker-down", Some("k8s-worker-1"), "2026-12-01T09:03:00.000Z"),
        ]
        .map(|(n, t, s)| (n.to_string(), t.map(str::to_string), s.to_string()));
        assert_eq!(got, expect);
    }
}
