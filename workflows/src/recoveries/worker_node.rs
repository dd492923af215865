//! `worker-node-recovery node=NAME` (level 2): a worker that is NotReady.
//!
//! The guide's `worker-node-recovery.sh`, made safe:
//! 1. `health`: the nodes and their conditions (`kubectl describe node`); evidence.
//! 2. `drain`: `kubectl drain NODE --ignore-daemonsets --delete-emptydir-data`
//!    through the Eviction API, with a deadline (PodDisruptionBudgets retried).
//! 3. `restart-containerd`, then `restart-kubelet` over ssh (containerd first:
//!    the kubelet needs it). Their failure is information, not a stop: it sends
//!    the run down the re-creation branch.
//! 4. `wait-ready`: the node's Ready condition, watched until `ready_timeout_s`
//!    (never `sleep 300`, never `grep Ready`, which matches NotReady). Tolerated.
//! 5. Only if the node did not come back — **the branch** — the VM is re-created:
//!    `recreate-destroy` asks first (a gate: the VM's disk is lost), then
//!    `terraform destroy` and `terraform apply` with `-target`, `trust-host-key`
//!    (the new VM has a new ssh host key: trusted as an explicit, recorded
//!    step), `join` (a fresh bootstrap token, held only in memory),
//!    `wait-ready-new`.
//! 6. `uncordon`, whichever branch brought the node back.

use std::collections::BTreeMap;

use dr_orchestrator::{CatalogError, Condition, ParamSpec, ResumeClass, RetryPolicy, WorkflowBuilder, WorkflowDef, WorkflowInfo};

use crate::actions::terraform::TerraformVerb;
use super::{a_few_times, terraform, NeededBy, MINUTE_MS};
use crate::actions::kube::health::ClusterHealth;
use crate::actions::kube::nodes::{Drain, NodeWaitReady, Uncordon};
use crate::actions::kubeadm::{KubeadmJoin, KubeadmJoinParams};
use crate::actions::ssh::{SshCommand, SshTrustHostKey};
use crate::config::{Config, Role};
use crate::params::Params;
use crate::Recovery;

pub const NAME: &str = "worker-node-recovery";

pub(crate) const RECOVERY: Recovery = Recovery { info, build };

fn info() -> WorkflowInfo {
    WorkflowInfo {
        name: NAME,
        level: 2,
        description: "a NotReady worker: drain, restart containerd and kubelet, wait Ready; else re-create its VM (asks first), re-join, uncordon",
        params: vec![
            ParamSpec { name: "node", description: "the worker to recover (a [[nodes]] name of role worker in dr.toml)", default: None },
            ParamSpec { name: "ready_timeout_s", description: "how long to wait for the node to turn Ready after the restarts, in seconds", default: Some("300") },
            ParamSpec { name: "drain_timeout_s", description: "how long the drain may take (PodDisruptionBudgets are retried until then), in seconds", default: Some("300") },
        ],
    }
}

fn build(config: &Config, values: &BTreeMap<String, String>) -> Result<WorkflowDef, CatalogError> {
    let info = info();
    let p = Params::new(&info, values)?;
    config.cluster().needed_by(NAME)?;
    let terraform_config = config.terraform().needed_by(NAME)?;
    let workers: Vec<&str> = config.nodes().needed_by(NAME)?.iter().filter(|n| n.role == Role::Worker).map(|n| n.name.as_str()).collect();
    let bad_node = |value: &str| CatalogError::BadParam {
        workflow: NAME.into(),
        param: "node".into(),
        value: value.into(),
        expected: format!("a worker of dr.toml: {}", workers.join(", ")),
    };
    let name = p.string("node").ok_or_else(|| CatalogError::MissingParam {
        workflow: NAME.into(),
        param: "node".into(),
        expected: format!("the worker to recover, one of {}", workers.join(", ")),
    })?;
    let node = config.node(name).filter(|n| n.role == Role::Worker).ok_or_else(|| bad_node(name))?;
    let ready_timeout_s: u64 = p.number("ready_timeout_s", 1..=86_400, "seconds, 1 to 86400")?.unwrap_or(300);
    let drain_timeout_s: u64 = p.number("drain_timeout_s", 1..=86_400, "seconds, 1 to 86400")?.unwrap_or(300);
    let control_plane = config.control_plane().ok_or_else(|| CatalogError::Config {
        workflow: NAME.into(),
        detail: "dr.toml names no control-plane node".into(),
    })?;
    let terraform_target = config.terraform_target(node).ok_or_else(|| CatalogError::Config {
        workflow: NAME.into(),
        detail: format!("[terraform.node_targets] has no target for {}; add `{} = \"libvirt_domain.…\"`", node.name, node.name),
    })?;
    let kube = config.kube_connection().needed_by(NAME)?;
    let ssh = config.ssh_target(node).needed_by(NAME)?;
    let once = RetryPolicy::none();
    let mut wf = WorkflowBuilder::new(NAME, info.level, info.description);

    let health = wf
        .step("health", "the nodes and their conditions (kubectl describe node)", ClusterHealth { connection: kube.clone(), fail_if_unhealthy: false })
        .retry(a_few_times())
        .timeout_ms(MINUTE_MS)
        .add();
    let drain = wf
        .step(
            "drain",
            &format!("kubectl drain {} --ignore-daemonsets --delete-emptydir-data", node.name),
            Drain { connection: kube.clone(), node: node.name.clone(), force: false, delete_emptydir_data: true, backoff_ms: 500, max_backoff_ms: 5_000 },
        )
        .after(&health)
        .retry(a_few_times())
        .timeout_ms(drain_timeout_s * 1000)
        .expected_ms(10_000)
        .add();
    let systemctl = |unit: &str| SshCommand { target: ssh.clone(), command: format!("systemctl restart {unit}"), sudo: true, timeout_ms: Some(2 * MINUTE_MS), probe: None };
    let containerd = wf
        .step("restart-containerd", &format!("ssh {}: sudo systemctl restart containerd", node.name), systemctl("containerd"))
        .after(&drain)
        .retry(a_few_times())
        .timeout_ms(3 * MINUTE_MS)
        .tolerate_failure()
        .add();
    let kubelet = wf
        .step("restart-kubelet", &format!("ssh {}: sudo systemctl restart kubelet", node.name), systemctl("kubelet"))
        .after(&containerd)
        .retry(a_few_times())
        .timeout_ms(3 * MINUTE_MS)
        .when(Condition::succeeded(&containerd))
        .tolerate_failure()
        .add();
    let wait_ready = |ready| NodeWaitReady { connection: kube.clone(), node: node.name.clone(), ready };
    let ready = wf
        .step("wait-ready", &format!("watch {} until Ready (at most {ready_timeout_s}s)", node.name), wait_ready(true))
        .after(&kubelet)
        .retry(once.clone())
        .timeout_ms(ready_timeout_s * 1000)
        .expected_ms(30_000)
        .when(Condition::succeeded(&kubelet))
        .tolerate_failure()
        .add();

    // The branch: the node did not come back.
    let destroy = wf
        .step(
            "recreate-destroy",
            &format!("terraform destroy -target={terraform_target}"),
            terraform(terraform_config, TerraformVerb::Destroy, Some(terraform_target)),
        )
        .after(&ready)
        .when(Condition::succeeded(&ready).not())
        .gate(&format!(
            "{name} is not Ready after restarting containerd and kubelet. Re-create its VM? \
             terraform destroy then apply -target={terraform_target}: the VM and its disk are lost (its pods were drained)",
            name = node.name
        ))
        .resume(ResumeClass::Probe)
        .retry(a_few_times())
        .timeout_ms(15 * MINUTE_MS)
        .expected_ms(60_000)
        .add();
    let apply = wf
        .step("recreate-apply", &format!("terraform apply -target={terraform_target}"), terraform(terraform_config, TerraformVerb::Apply, Some(terraform_target)))
        .after(&destroy)
        .resume(ResumeClass::Probe)
        .retry(a_few_times())
        .timeout_ms(30 * MINUTE_MS)
        .expected_ms(120_000)
        .add();
    let trust = wf
        .step(
            "trust-host-key",
            &format!("trust the new ssh host key of {} (recorded with its fingerprint)", node.name),
            SshTrustHostKey { target: ssh.clone() },
        )
        .after(&apply)
        .retry(a_few_times())
        .timeout_ms(2 * MINUTE_MS)
        .add();
    let join = wf
        .step(
            "join",
            &format!("kubeadm reset -f; kubeadm join with a fresh token from {}", control_plane.name),
            KubeadmJoin {
                params: KubeadmJoinParams {
                    control_plane: config.ssh_target(control_plane).needed_by(NAME)?,
                    node: ssh.clone(),
                    node_name: node.name.clone(),
                    reset_first: true,
                    kube: kube.clone(),
                },
            },
        )
        .after(&trust)
        .resume(ResumeClass::Probe)
        .retry(a_few_times())
        .timeout_ms(10 * MINUTE_MS)
        .expected_ms(30_000)
        .add();
    let ready_new = wf
        .step("wait-ready-new", &format!("watch the re-created {} until Ready", node.name), wait_ready(true))
        .after(&join)
        .retry(a_few_times())
        .timeout_ms(ready_timeout_s * 1000)
        .expected_ms(30_000)
        .add();

    wf.step("uncordon", &format!("kubectl uncordon {}", node.name), Uncordon { connection: kube, node: node.name.clone() })
        .after(&ready)
        .after(&ready_new)
        .when(Condition::Any(vec![Condition::succeeded(&ready), Condition::succeeded(&ready_new)]))
        .retry(a_few_times())
        .timeout_ms(MINUTE_MS)
        .add();
    Ok(wf.build())
}
