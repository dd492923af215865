//! `dr config check --connect`: try what `dr.toml` names — the API server
//! (`/version` through the kubeconfig), each etcd endpoint (status and a
//! health read over TLS), each node over ssh with strict host keys (`true`),
//! the backup directory (newest backup against the RPO), the terraform
//! binary and the scripts — and report each with its latency.
//!
//! Owns: [`probe`] and [`Probe`], built on the actions' own helpers (so a
//! check passes exactly when the actions would connect). Refuses: changing
//! anything (no host key is trusted, nothing is written) and stopping at the
//! first failure (every check runs). A section the file does not have is
//! not probed (and not reported).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use dr_orchestrator::{ActionCtx, RunId, SystemClock};
use serde::Serialize;
use tokio::time::Instant;

use super::{Backup, Cluster, Config, Etcd, Scripts, Terraform};
use crate::actions::etcd::EtcdConnection;
use crate::actions::kube::KubeConnection;
use crate::actions::backup::{self, find_backups};
use crate::actions::etcd::endpoint_status;
use crate::actions::ssh::{pool, run_checked, RunOptions};

/// The result of one check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Probe {
    /// What was checked: `api`, `etcd`, `ssh NODE`, `backup`, `terraform`, `scripts`.
    pub name: String,
    /// Where: a URL, `user@host:port`, a path.
    pub target: String,
    pub ok: bool,
    /// Why it failed, and what to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What it found (a version, the newest backup's age).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub latency_ms: u64,
}

/// A check gives up after this long (each one has shorter timeouts of its own).
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

type Check<'a> = Pin<Box<dyn Future<Output = Probe> + 'a>>;

/// Runs every check concurrently; results in a fixed order.
pub async fn probe(config: &Config) -> Vec<Probe> {
    // The ssh pool is keyed by run: these checks get a run of their own, closed at the end.
    let run = RunId::new_v7(0, u128::from(std::process::id()) << 32 | 0xd1c0);
    let ctx = ActionCtx { run_id: run, ..ActionCtx::detached("config-check", Arc::new(SystemClock)) };
    let mut checks: Vec<Check<'_>> = Vec::new();
    // Only what the file has: an absent section has nothing to reach.
    if let Ok(cluster) = config.cluster() {
        let api_target = cluster.api_url.clone().unwrap_or_else(|| cluster.kubeconfig.display().to_string());
        checks.push(Box::pin(timed("api", api_target, api(cluster))));
    }
    if let Ok(etcd_config) = config.etcd() {
        for endpoint in &etcd_config.endpoints {
            checks.push(Box::pin(timed("etcd", endpoint.clone(), etcd(etcd_config, endpoint))));
        }
    }
    // Nodes are reached over ssh: without `[ssh]` there is no way to try them.
    for node in &config.nodes {
        if let Ok(target) = config.ssh_target(node) {
            let shown = format!("{}@{}", target.user, target.address());
            checks.push(Box::pin(timed(format!("ssh {}", node.name), shown, ssh(&ctx, target))));
        }
    }
    if let Ok(backup) = config.backup() {
        checks.push(Box::pin(timed("backup", backup.dir.display().to_string(), backups(&ctx, backup))));
    }
    if let Ok(terraform_config) = config.terraform() {
        checks.push(Box::pin(timed("terraform", terraform_config.binary.display().to_string(), terraform(terraform_config))));
    }
    if let Ok(scripts_config) = config.scripts() {
        checks.push(Box::pin(timed("scripts", scripts_config.restore.display().to_string(), scripts(scripts_config))));
    }
    let probes = futures::future::join_all(checks).await;
    pool::close_run(run);
    probes
}

/// What a check found: a detail, and the target when only the check knows it.
struct Found {
    detail: String,
    target: Option<String>,
}

impl Found {
    fn new(detail: impl Into<String>) -> Self {
        Found { detail: detail.into(), target: None }
    }
}

async fn timed(name: impl Into<String>, target: String, check: impl Future<Output = Result<Found, String>>) -> Probe {
    let started = Instant::now();
    let result = match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
    };
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut probe = Probe { name: name.into(), target, ok: result.is_ok(), error: None, detail: None, latency_ms };
    match result {
        Ok(found) => {
            probe.detail = Some(found.detail);
            if let Some(target) = found.target {
                probe.target = target;
            }
        }
        Err(error) => probe.error = Some(error),
    }
    probe
}

async fn api(cluster: &Cluster) -> Result<Found, String> {
    let connection = KubeConnection { kubeconfig: Some(cluster.kubeconfig.clone()), context: cluster.context.clone() };
    let kube = connection.connect().await.map_err(|e| e.message)?;
    let version = kube.client.apiserver_version().await.map_err(|e| kube.error("GET /version", e).message)?;
    Ok(Found { detail: format!("Kubernetes {}", version.git_version), target: Some(kube.server.clone()) })
}

async fn etcd(config: &Etcd, endpoint: &str) -> Result<Found, String> {
    let connection = EtcdConnection {
        endpoints: config.endpoints.clone(),
        cacert: config.cacert.clone(),
        cert: config.cert.clone(),
        key: config.key.clone(),
        timeout_ms: 5_000,
    };
    let status = endpoint_status(&connection, endpoint).await;
    if status.healthy {
        let version = status.version.unwrap_or_default();
        let leader = if status.is_leader { ", leader" } else { "" };
        Ok(Found::new(format!("healthy, etcd {version}{leader}")))
    } else {
        Err(status.error.unwrap_or_else(|| "not healthy".to_owned()))
    }
}

async fn ssh(ctx: &ActionCtx, target: crate::actions::ssh::SshTarget) -> Result<Found, String> {
    let timeout = Duration::from_millis(target.connect_timeout_ms.max(1) * 2);
    let options = RunOptions { timeout: Some(timeout), ..RunOptions::default() };
    run_checked(ctx, &target, "true", options).await.map_err(|e| e.message)?;
    Ok(Found::new("logged in, host key known, `true` ran"))
}

async fn backups(ctx: &ActionCtx, config: &Backup) -> Result<Found, String> {
    let dir = config.dir.clone();
    let pattern = config.pattern.clone();
    let rpo_secs = config.rpo_hours.saturating_mul(3600);
    let now = backup::now(ctx);
    let found = tokio::task::spawn_blocking(move || find_backups(&dir, &pattern, now))
        .await
        .map_err(|e| format!("the backup check did not finish: {e}"))?
        .map_err(|e| e.message)?;
    let Some(newest) = found.first() else {
        return Err(format!(
            "no backup matching {} in {}; check that the backup job runs and writes there",
            config.pattern,
            config.dir.display()
        ));
    };
    let age = hours(newest.age_secs);
    if newest.age_secs > rpo_secs {
        return Err(format!(
            "RPO exceeded: the newest backup {} is {age} old, the RPO is {} h; run a backup now",
            newest.path.display(),
            config.rpo_hours
        ));
    }
    Ok(Found::new(format!("{} backups, newest {} ({age} old, RPO {} h)", found.len(), newest.path.display(), config.rpo_hours)))
}

fn hours(secs: u64) -> String {
    format!("{:.1} h", secs as f64 / 3600.0)
}

async fn terraform(config: &Terraform) -> Result<Found, String> {
    let binary = resolve_program(&config.binary)
        .ok_or_else(|| format!("no terraform program {}; install terraform or set terraform.binary", config.binary.display()))?;
    if !config.dir.is_dir() {
        return Err(format!("terraform.dir {} is not a directory", config.dir.display()));
    }
    Ok(Found { detail: format!("{} present; runs in {}", binary.display(), config.dir.display()), target: Some(binary.display().to_string()) })
}

async fn scripts(scripts: &Scripts) -> Result<Found, String> {
    let mut missing = Vec::new();
    for (key, dir) in [("scripts.host_setup_dir", &scripts.host_setup_dir), ("scripts.platform_dir", &scripts.platform_dir)] {
        if !dir.is_dir() {
            missing.push(format!("{key} {} is not a directory", dir.display()));
        }
    }
    if !is_executable(&scripts.restore) {
        missing.push(format!("scripts.restore {} is not an executable file", scripts.restore.display()));
    }
    if missing.is_empty() {
        Ok(Found::new("host-setup and platform directories and the restore script present"))
    } else {
        Err(missing.join("; "))
    }
}

/// `program` itself when it has a directory part, else the first on `PATH`.
fn resolve_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return is_executable(program).then(|| program.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
