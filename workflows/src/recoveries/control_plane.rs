//! `control-plane-recovery` (level 3): the control-plane VM is lost.
//!
//! The guide's `control-plane-rebuild.sh`, made safe:
//! 1. `check-backup`: the newest backup, checked first (the SHA-256 etcd
//!    appends, its age against the RPO), pinned for the restore;
//!    `trial-restore` proves it restores; `accept-rpo-loss` asks an operator
//!    (even with `--yes`) when it is older than the RPO.
//! 2. `destroy` — **asks first** — then `apply`: `terraform destroy/apply
//!    -target` of the control-plane VM only. `trust-host-key`: the new VM's
//!    ssh host key, trusted as a recorded step.
//! 3. `kubeadm-init` (probe: `/etc/kubernetes/admin.conf` exists), then
//!    `restore-etcd` of the pinned snapshot (old data kept aside), `verify-etcd`.
//! 4. Only **after** the restore (bootstrap tokens live in etcd), every worker,
//!    in parallel: `rejoin-…` — `kubeadm reset -f` and `kubeadm join` with a
//!    fresh token made by that step and held only in memory — and `ready-…`.
//! 5. `verify-cluster`, `verify-apps`, `verify-ingress`.

use std::collections::BTreeMap;
use std::time::Duration;

use dr_orchestrator::{CatalogError, ParamSpec, ResumeClass, StepId, WorkflowBuilder, WorkflowDef, WorkflowInfo};

use crate::actions::terraform::TerraformVerb;
use super::{a_few_times, converging, pin_backup, terraform, verify_platform, NeededBy, PinnedBackup, MINUTE_MS};
use crate::actions::etcd::EtcdEndpointHealth;
use crate::actions::kube::nodes::NodeWaitReady;
use crate::actions::kubeadm::{KubeadmJoin, KubeadmJoinParams};
use crate::actions::snapshot::RestoreChosen;
use crate::actions::ssh::{SshCommand, SshTrustHostKey};
use crate::config::{Config, Role};
use crate::params::Params;
use crate::Recovery;

pub const NAME: &str = "control-plane-recovery";

pub(crate) const RECOVERY: Recovery = Recovery { info, build };

fn info() -> WorkflowInfo {
    WorkflowInfo {
        name: NAME,
        level: 3,
        description: "the control-plane VM lost: backup checked, VM re-created (asks first), kubeadm init, etcd restored, workers re-joined in parallel, verified",
        params: vec![
            ParamSpec { name: "pod_network_cidr", description: "kubeadm init --pod-network-cidr", default: Some("10.244.0.0/16") },
            ParamSpec { name: "service_cidr", description: "kubeadm init --service-cidr", default: Some("10.96.0.0/12") },
        ],
    }
}

fn build(config: &Config, values: &BTreeMap<String, String>) -> Result<WorkflowDef, CatalogError> {
    let info = info();
    let p = Params::new(&info, values)?;
    config.cluster().needed_by(NAME)?;
    let backup = config.backup().needed_by(NAME)?;
    let terraform_config = config.terraform().needed_by(NAME)?;
    let pod_cidr = p.string("pod_network_cidr").unwrap_or("10.244.0.0/16").to_owned();
    let service_cidr = p.string("service_cidr").unwrap_or("10.96.0.0/12").to_owned();
    let missing = |detail: String| CatalogError::Config { workflow: NAME.into(), detail };
    let cp = config.control_plane().ok_or_else(|| missing("dr.toml names no control-plane node".into()))?;
    let target = config.terraform_target(cp).ok_or_else(|| missing("[terraform] has no control_plane_target".into()))?.to_owned();
    let work = backup.work_dir.join("control-plane-recovery");
    let kube = config.kube_connection().needed_by(NAME)?;
    let cp_ssh = config.ssh_target(cp).needed_by(NAME)?;
    let mut wf = WorkflowBuilder::new(NAME, info.level, info.description);

    let PinnedBackup { choose: backup, trial, accept } = pin_backup(&mut wf, backup, &work, "check-backup", "Rebuild the control plane");

    let destroy = wf
        .step("destroy", &format!("terraform destroy -target={target}"), terraform(terraform_config, TerraformVerb::Destroy, Some(&target)))
        .after(&backup)
        .after(&trial)
        .after_settled(&accept)
        .gate(&format!(
            "Re-create the control-plane VM {cp}? terraform destroy then apply -target={target}: the VM is lost; \
             kubeadm init, then etcd restored from {{check-backup:/name}} ({{check-backup:/age}} old, revision \
             {{trial-restore:/revision}}), then every worker reset and re-joined.",
            cp = cp.name
        ))
        .resume(ResumeClass::Probe)
        .retry(a_few_times())
        .timeout_ms(15 * MINUTE_MS)
        .expected_ms(60_000)
        .add();
    let apply = wf
        .step("apply", &format!("terraform apply -target={target} (converges: a rerun creates only what is missing)"), terraform(terraform_config, TerraformVerb::Apply, Some(&target)))
        .after(&destroy)
        .resume(ResumeClass::Probe)
        .retry(a_few_times())
        .timeout_ms(30 * MINUTE_MS)
        .expected_ms(120_000)
        .add();
    let trust = wf
        .step("trust-host-key", &format!("trust the new ssh host key of {} (recorded with its fingerprint)", cp.name), SshTrustHostKey { target: cp_ssh.clone() })
        .after(&apply)
        .retry(a_few_times())
        .timeout_ms(5 * MINUTE_MS)
        .add();
    let init = wf
        .step(
            "kubeadm-init",
            "kubeadm init on the new control plane",
            SshCommand::sudo(
                cp_ssh.clone(),
                format!(
                    "kubeadm init --apiserver-advertise-address={} --pod-network-cidr={pod_cidr} --service-cidr={service_cidr} --upload-certs",
                    cp.ssh_host
                ),
            )
            .probed_by("ls /etc/kubernetes/admin.conf"),
        )
        .after(&trust)
        .resume(ResumeClass::Probe)
        .retry(a_few_times())
        .timeout_ms(15 * MINUTE_MS)
        .expected_ms(120_000)
        .add();
    let restore = wf
        .step(
            "restore-etcd",
            &format!("restore the pinned snapshot into etcd on {} (old data kept aside)", config.etcd().needed_by(NAME)?.node),
            RestoreChosen::new(super::etcd::restore_params(config, NAME)?, &backup),
        )
        .after(&backup)
        .after(&init)
        .resume(ResumeClass::Probe)
        .retry(a_few_times())
        .timeout_ms(20 * MINUTE_MS)
        .expected_ms(60_000)
        .add();
    let verify_etcd = wf
        .step("verify-etcd", "every etcd endpoint healthy", EtcdEndpointHealth { etcd: config.etcd_connection().needed_by(NAME)? })
        .after(&restore)
        .retry(converging(Duration::from_secs(180)))
        .timeout_ms(MINUTE_MS)
        .add();

    let mut ready = Vec::new();
    for worker in config.nodes().needed_by(NAME)?.iter().filter(|n| n.role == Role::Worker) {
        let join = wf
            .step(
                &format!("rejoin-{}", worker.name),
                &format!("{}: kubeadm reset -f, then kubeadm join with a fresh token (made after the restore)", worker.name),
                KubeadmJoin {
                    params: KubeadmJoinParams {
                        control_plane: cp_ssh.clone(),
                        node: config.ssh_target(worker).needed_by(NAME)?,
                        node_name: worker.name.clone(),
                        reset_first: true,
                        kube: kube.clone(),
                    },
                },
            )
            .after(&verify_etcd)
            .resume(ResumeClass::Probe)
        .retry(a_few_times())
            .timeout_ms(10 * MINUTE_MS)
            .expected_ms(30_000)
            .add();
        ready.push(
            wf.step(
                &format!("ready-{}", worker.name),
                &format!("watch {} until Ready", worker.name),
                NodeWaitReady { connection: kube.clone(), node: worker.name.clone(), ready: true },
            )
            .after(&join)
            .retry(a_few_times())
            .timeout_ms(10 * MINUTE_MS)
            .add(),
        );
    }
    let after: Vec<StepId> = std::iter::once(verify_etcd.id().clone()).chain(ready.iter().map(|r| r.id().clone())).collect();
    verify_platform(&mut wf, &kube, config.verify().needed_by(NAME)?, &after, Duration::from_secs(300));
    Ok(wf.build())
}
