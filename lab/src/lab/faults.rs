//! The lab's named faults: which exist, what argument each takes, and
//! injecting one through the lab's `bin/lab-fault` script (`dr-lab fault`,
//! `Lab::fault`). A wrong request (unknown fault, missing or unknown node) is
//! a [`FaultError::Usage`] that names the valid choices; a fault the lab
//! could not inject is [`FaultError::Failed`].
//!
//! Owns checking the request and running the script. Refuses the faults'
//! effects (the script and the API server own those) and reporting which
//! faults are in effect (`status.rs`).

use std::path::Path;
use std::process::{Command, Stdio};

use super::{CONTROL_PLANE, WORKERS};

/// What a fault takes after its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultArg {
    /// Nothing.
    None,
    /// A node of the lab (required).
    Node,
    /// Optionally `NAMESPACE/WORKLOAD`.
    Workload,
}

/// Every fault, in the order `docs/LAB.md` lists them.
pub const FAULTS: &[(&str, FaultArg)] = &[
    ("pod-crash", FaultArg::Workload),
    ("network", FaultArg::None),
    ("argocd-down", FaultArg::None),
    ("worker-down", FaultArg::Node),
    ("worker-dead", FaultArg::Node),
    ("etcd-corrupt", FaultArg::None),
    ("control-plane-lost", FaultArg::None),
    ("host-lost", FaultArg::None),
];

/// Why a fault was not injected.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    /// The request is wrong (unknown fault, missing or unknown node, an argument the fault
    /// does not take); the message names the valid choices.
    #[error("{0}")]
    Usage(String),
    /// The fault is valid but the lab could not inject it (no lab, API refused, …).
    #[error("{fault} could not be injected: {reason}")]
    Failed { fault: String, reason: String },
}

impl FaultError {
    /// A usage error (exit status 2 of `dr-lab fault`), not a failed injection.
    pub fn is_usage(&self) -> bool {
        matches!(self, FaultError::Usage(_))
    }
}

/// Every node of the lab, control plane first.
pub fn nodes() -> Vec<&'static str> {
    std::iter::once(CONTROL_PLANE).chain(WORKERS.iter().copied()).collect()
}

fn fault_list() -> String {
    FAULTS
        .iter()
        .map(|(name, arg)| match arg {
            FaultArg::None => name.to_string(),
            FaultArg::Node => format!("{name} NODE"),
            FaultArg::Workload => format!("{name} [NAMESPACE/WORKLOAD]"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks a fault request against [`FAULTS`] and the lab's nodes.
pub fn check_request(name: &str, arg: Option<&str>) -> Result<(), FaultError> {
    let usage = |message: String| Err(FaultError::Usage(message));
    let Some((_, kind)) = FAULTS.iter().find(|(known, _)| *known == name) else {
        return usage(format!("unknown fault {name:?} ({})", fault_list()));
    };
    match (kind, arg) {
        (FaultArg::None, None) | (FaultArg::Workload, None) => Ok(()),
        (FaultArg::None, Some(arg)) => usage(format!("{name} takes no argument (got {arg:?})")),
        (FaultArg::Workload, Some(arg)) => match arg.split_once('/') {
            Some((namespace, workload)) if !namespace.is_empty() && !workload.is_empty() && !workload.contains('/') => Ok(()),
            _ => usage(format!("{name} takes NAMESPACE/WORKLOAD, e.g. demo/web (got {arg:?})")),
        },
        (FaultArg::Node, None) => usage(format!("{name} needs a NODE ({})", WORKERS.join(", "))),
        (FaultArg::Node, Some(node)) if nodes().contains(&node) => Ok(()),
        (FaultArg::Node, Some(node)) => usage(format!("unknown node {node} ({})", nodes().join(", "))),
    }
}

/// Injects a named fault into the lab in `dir` through `<dir>/bin/lab-fault`
/// (which logs it in `<dir>/faults.log`); returns what the script printed.
pub fn inject_fault(dir: &Path, name: &str, arg: Option<&str>) -> Result<String, FaultError> {
    check_request(name, arg)?;
    let failed = |reason: String| FaultError::Failed { fault: name.to_string(), reason };
    let script = dir.join("bin/lab-fault");
    if !script.is_file() {
        return Err(failed(format!("no lab in {} (start one with `dr-lab up --dir {}`)", dir.display(), dir.display())));
    }
    let mut command = Command::new(&script);
    command.arg(name).args(arg).stdin(Stdio::null());
    let output = command.output().map_err(|e| failed(format!("running the lab's fault script: {e}")))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    // The script's own messages, without its name (the caller presents them).
    let stderr = String::from_utf8_lossy(&output.stderr);
    let reason: Vec<&str> = stderr.lines().map(|l| l.trim().trim_start_matches("lab-fault: ")).filter(|l| !l.is_empty()).collect();
    let reason = if reason.is_empty() { format!("the lab's fault script failed ({})", output.status) } else { reason.join("; ") };
    if output.status.code() == Some(2) {
        Err(FaultError::Usage(reason))
    } else {
        Err(failed(reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, arg: Option<&str>, expect: Result<(), &str>) {
        let got = check_request(name, arg).map_err(|e| {
            assert!(e.is_usage(), "{e}");
            e.to_string()
        });
        assert_eq!(got.as_ref().map(|_| ()).map_err(String::as_str), expect, "{name} {arg:?}");
    }

    #[test]
    fn requests_are_checked_against_the_faults_and_the_nodes() {
        check("worker-down", Some("k8s-worker-1"), Ok(()));
        check("worker-dead", Some("k8s-control-plane-1"), Ok(()));
        check("pod-crash", None, Ok(()));
        check("pod-crash", Some("demo/api-cache"), Ok(()));
        check("host-lost", None, Ok(()));
        check("worker-down", None, Err("worker-down needs a NODE (k8s-worker-1, k8s-worker-2)"));
        check("worker-down", Some("k8s-worker-9"), Err("unknown node k8s-worker-9 (k8s-control-plane-1, k8s-worker-1, k8s-worker-2)"));
        check("pod-crash", Some("web"), Err("pod-crash takes NAMESPACE/WORKLOAD, e.g. demo/web (got \"web\")"));
        check("network", Some("k8s-worker-1"), Err("network takes no argument (got \"k8s-worker-1\")"));
        check(
            "bogus",
            None,
            Err("unknown fault \"bogus\" (pod-crash [NAMESPACE/WORKLOAD], network, argocd-down, worker-down NODE, worker-dead NODE, etcd-corrupt, control-plane-lost, host-lost)"),
        );
    }
}
