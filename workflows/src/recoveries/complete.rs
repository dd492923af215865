//! `complete-recovery` (level 4): the host machine is lost — rebuild the whole
//! platform from a backup, the guide's `complete-disaster-recovery.sh` in its
//! five phases, made safe.
//!
//! 0. `choose-backup`: the newest backup is **pinned** first — its path and
//!    its snapshot's SHA-256 recorded, so a rerun after a crash restores the
//!    same one — and `trial-restore` proves it restores before anything is
//!    created. If it is older than the RPO, `accept-rpo-loss` asks an operator
//!    to accept the loss, even with `--yes`.
//! 1. Host preparation: `host-setup` — **asks first**, showing which backup and
//!    how much is lost — then `libvirt-sudo`, `storage`, `verify-host` (the
//!    guide's host-setup scripts).
//! 2. Infrastructure: `terraform-init`, `terraform-apply` (every VM; cloud-init
//!    runs `kubeadm init` and the joins), then per node, in parallel, its new
//!    ssh host key trusted (`trust-…`) and the node watched until Ready
//!    (`ready-…`) — instead of `sleep 600`.
//! 3. Restore: `restore-etcd` of the pinned snapshot on the control plane (old
//!    data kept aside; probe class), `verify-etcd`.
//! 4. Platform: `platform-deploy` (the guide's `platform-deploy.sh`).
//! 5. Verification, in parallel: `verify-nodes` (nodes Ready, kube-system pods),
//!    `verify-apps` (every Application Synced/Healthy), `verify-ingress` (HTTP).

use std::collections::BTreeMap;
use std::time::Duration;

use dr_orchestrator::{CatalogError, ParamSpec, ResumeClass, StepHandle, WorkflowBuilder, WorkflowDef, WorkflowInfo};

use crate::actions::terraform::TerraformVerb;
use super::{a_few_times, converging, pin_backup, terraform, verify_platform, NeededBy, PinnedBackup, MINUTE_MS};
use crate::actions::command::{CommandAction, CommandParams};
use crate::actions::etcd::EtcdEndpointHealth;
use crate::actions::kube::nodes::NodeWaitReady;
use crate::actions::snapshot::RestoreChosen;
use crate::actions::ssh::SshTrustHostKey;
use crate::config::Config;
use crate::params::Params;
use crate::Recovery;

pub const NAME: &str = "complete-recovery";

pub(crate) const RECOVERY: Recovery = Recovery { info, build };

fn info() -> WorkflowInfo {
    WorkflowInfo {
        name: NAME,
        level: 4,
        description: "the host is lost: pin the newest backup, prepare the host, terraform every VM, restore etcd, redeploy the platform, verify (asks first)",
        params: vec![ParamSpec {
            name: "ready_timeout_s",
            description: "how long each node may take to turn Ready after terraform, in seconds",
            default: Some("900"),
        }],
    }
}

fn build(config: &Config, values: &BTreeMap<String, String>) -> Result<WorkflowDef, CatalogError> {
    let info = info();
    let p = Params::new(&info, values)?;
    let backup = config.backup().needed_by(NAME)?;
    let scripts = config.scripts().needed_by(NAME)?;
    let terraform_config = config.terraform().needed_by(NAME)?;
    let ready_timeout_s: u64 = p.number("ready_timeout_s", 1..=86_400, "seconds, 1 to 86400")?.unwrap_or(900);
    let work = backup.work_dir.join("complete-recovery");
    let kube = config.kube_connection().needed_by(NAME)?;
    let mut wf = WorkflowBuilder::new(NAME, info.level, info.description);

    // 0. The backup, pinned and proven.
    let PinnedBackup { choose, trial, accept } = pin_backup(&mut wf, backup, &work, "choose-backup", "Rebuild the whole platform");

    // 1. Host preparation.
    let script = |dir: &std::path::Path, name: &str| CommandAction::new(CommandParams::new(dir.join(name)).cwd(dir));
    let setup_dir = &scripts.host_setup_dir;
    let host = wf
        .step("host-setup", "host-setup/setup-host.sh (packages)", script(setup_dir, "setup-host.sh"))
        .after(&choose)
        .after(&trial)
        .after_settled(&accept)
        .gate(
            "Rebuild the whole platform on this host from backup {choose-backup:/name} ({choose-backup:/age} old; \
             etcd revision {trial-restore:/revision}, {trial-restore:/total_keys} keys)? Changes made after the backup are lost. \
             This prepares the host, creates every VM with terraform, restores etcd and redeploys the platform.",
        )
        .retry(a_few_times())
        .timeout_ms(30 * MINUTE_MS)
        .expected_ms(60_000)
        .add();
    let libvirt = wf
        .step("libvirt-sudo", "host-setup/setup-libvirt-sudo.sh", script(setup_dir, "setup-libvirt-sudo.sh"))
        .after(&host)
        .retry(a_few_times())
        .timeout_ms(10 * MINUTE_MS)
        .add();
    let storage = wf
        .step("storage", "host-setup/setup-storage.sh", script(setup_dir, "setup-storage.sh"))
        .after(&libvirt)
        .retry(a_few_times())
        .timeout_ms(10 * MINUTE_MS)
        .add();
    let verify_host = wf
        .step("verify-host", "host-setup/verify-setup.sh", script(setup_dir, "verify-setup.sh"))
        .after(&storage)
        .retry(a_few_times())
        .timeout_ms(5 * MINUTE_MS)
        .add();

    // 2. Infrastructure.
    let tf_init = wf
        .step("terraform-init", "terraform init", CommandAction::new(CommandParams::new(&terraform_config.binary).args(["init", "-input=false"]).cwd(&terraform_config.dir)))
        .after(&verify_host)
        .retry(a_few_times())
        .timeout_ms(10 * MINUTE_MS)
        .add();
    let tf_apply = wf
        .step(
            "terraform-apply",
            "terraform apply: every VM (cloud-init runs kubeadm init and the joins); probed by terraform plan -detailed-exitcode",
            terraform(terraform_config, TerraformVerb::Apply, None),
        )
        .after(&tf_init)
        .resume(ResumeClass::Probe)
        .retry(a_few_times())
        .timeout_ms(60 * MINUTE_MS)
        .expected_ms(10 * MINUTE_MS)
        .add();
    let mut ready: Vec<StepHandle<_>> = Vec::new();
    for node in config.nodes().needed_by(NAME)? {
        let trust = wf
            .step(
                &format!("trust-{}", node.name),
                &format!("trust the new ssh host key of {} (recorded with its fingerprint)", node.name),
                SshTrustHostKey { target: config.ssh_target(node).needed_by(NAME)? },
            )
            .after(&tf_apply)
            .retry(a_few_times())
            .timeout_ms(5 * MINUTE_MS)
            .add();
        ready.push(
            wf.step(
                &format!("ready-{}", node.name),
                &format!("watch {} until Ready", node.name),
                NodeWaitReady { connection: kube.clone(), node: node.name.clone(), ready: true },
            )
            .after(&trust)
            .retry(a_few_times())
            .timeout_ms(ready_timeout_s * 1000)
            .expected_ms(60_000)
            .add(),
        );
    }

    // 3. Restore.
    let mut restore = wf
        .step(
            "restore-etcd",
            &format!("restore the pinned snapshot into etcd on {} (old data kept aside)", config.etcd().needed_by(NAME)?.node),
            RestoreChosen::new(super::etcd::restore_params(config, NAME)?, &choose),
        )
        .after(&choose)
        .resume(ResumeClass::Probe)
        .retry(a_few_times())
        .timeout_ms(20 * MINUTE_MS)
        .expected_ms(60_000);
    for r in &ready {
        restore = restore.after(r);
    }
    let restore = restore.add();
    let verify_etcd = wf
        .step("verify-etcd", "every etcd endpoint healthy", EtcdEndpointHealth { etcd: config.etcd_connection().needed_by(NAME)? })
        .after(&restore)
        .retry(converging(Duration::from_secs(180)))
        .timeout_ms(MINUTE_MS)
        .add();

    // 4. Platform.
    let platform = wf
        .step("platform-deploy", "platform/platform-deploy.sh", script(&scripts.platform_dir, "platform-deploy.sh"))
        .after(&verify_etcd)
        .retry(a_few_times())
        .timeout_ms(60 * MINUTE_MS)
        .expected_ms(5 * MINUTE_MS)
        .add();

    // 5. Verification.
    verify_platform(&mut wf, &kube, config.verify().needed_by(NAME)?, std::slice::from_ref(platform.id()), Duration::from_secs(600));
    Ok(wf.build())
}
