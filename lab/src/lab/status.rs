//! The platform health report of a lab directory (what `dr-lab status`
//! prints): whether each part runs, a top-level `healthy` for the whole
//! platform with one entry per check, and `etcd_marker`, the value of
//! `/lab/backup/marker` in etcd now (the backup the data came from).
//!
//! Owns reading the lab from outside, through its directory (pid files,
//! `lab.json`) and its endpoints, as an operator would. Refuses changing
//! anything.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use super::etcd::EtcdClient;
use super::process::{pid_alive, read_pid};
use super::{http, Summary};

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
            nodes.push(json!({ "name": node.name, "ssh_host": node.ssh_host, "ssh_port": node.ssh_port, "sshd_pid": pid, "up": pid.is_some() }));
        }
    }
    let (api_url, ingress_url) = summary.as_ref().map(|s| (s.api_url.clone(), s.ingress_url.clone())).unwrap_or_default();
    let health: Option<Value> = (!api_url.is_empty())
        .then(|| http::request("GET", &format!("{api_url}/lab/v1/health"), None).ok())
        .flatten()
        .filter(|(code, _)| *code == 200)
        .and_then(|(_, body)| serde_json::from_str(&body).ok());
    let api_healthy = health.as_ref().is_some_and(|h| h["healthy"] == true || matches!(h["status"].as_str(), Some("healthy" | "ok")));
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
    let down: Vec<&str> = nodes.iter().filter(|n| n["up"] != true).filter_map(|n| n["name"].as_str()).collect();
    let sshd = check(!nodes.is_empty() && down.is_empty(), if down.is_empty() { "every node's sshd runs".to_string() } else { format!("down: {}", down.join(", ")) });
    let checks = json!({
        "api": api, "nodes": nodes_check, "kube_system": kube_system, "argocd": argocd,
        "ingress": ingress, "etcd": etcd, "sshd": sshd,
    });
    let healthy = CHECKS.iter().all(|c| checks[c]["ok"] == true);
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
        "etcd_marker": etcd_marker,
        "api": { "url": api_url, "healthy": api_healthy },
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
    for name in CHECKS {
        let c = &report["checks"][name];
        out.push_str(&format!("  {:<12} {:<4} {}\n", name, if c["ok"] == true { "ok" } else { "FAIL" }, c["detail"].as_str().unwrap_or_default()));
    }
    out.push_str(&format!("  etcd marker  {}\n", report["etcd_marker"].as_str().unwrap_or("(none)")));
    out.push_str(&format!("  api          {}\n", report["api"]["url"].as_str().unwrap_or_default()));
    if let Some(nodes) = report["nodes"].as_array() {
        for node in nodes {
            out.push_str(&format!(
                "  {:<20} {}:{} {}\n",
                node["name"].as_str().unwrap_or_default(),
                node["ssh_host"].as_str().unwrap_or_default(),
                node["ssh_port"],
                if node["up"] == true { "up" } else { "down" }
            ));
        }
    }
    out
}
