//! The lab's shell scripts (sources in `lab/lab-bin/`), embedded in the
//! binary and written into a lab dir with the lab's path baked in: the lab
//! machinery (`bin/lab-common.sh`, `bin/lab-node`, `bin/lab-fault`,
//! `etcd/run.sh`), the bastion tools (`bin/terraform`, `bin/k8s-restore.sh`, `host-setup/*.sh`,
//! `platform/platform-deploy.sh`) and the node-side commands (`node-bin/`,
//! copied into each node's `bin/` when the node is created).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};

const LAB_COMMON: &str = include_str!("../../lab-bin/lab-common.sh");
const LAB_NODE: &str = include_str!("../../lab-bin/lab-node");
const LAB_FAULT: &str = include_str!("../../lab-bin/lab-fault");
const ETCD_RUN: &str = include_str!("../../lab-bin/etcd-run.sh");
const TERRAFORM: &str = include_str!("../../lab-bin/bastion/terraform");
const SETUP_HOST: &str = include_str!("../../lab-bin/bastion/setup-host.sh");
const SETUP_LIBVIRT: &str = include_str!("../../lab-bin/bastion/setup-libvirt-sudo.sh");
const SETUP_STORAGE: &str = include_str!("../../lab-bin/bastion/setup-storage.sh");
const VERIFY_SETUP: &str = include_str!("../../lab-bin/bastion/verify-setup.sh");
const K8S_RESTORE: &str = include_str!("../../lab-bin/bastion/k8s-restore.sh");
const PLATFORM_DEPLOY: &str = include_str!("../../lab-bin/bastion/platform-deploy.sh");
const NODE_SUDO: &str = include_str!("../../lab-bin/node/sudo");
const NODE_SYSTEMCTL: &str = include_str!("../../lab-bin/node/systemctl");
const NODE_KUBEADM: &str = include_str!("../../lab-bin/node/kubeadm");
const NODE_ETCDCTL: &str = include_str!("../../lab-bin/node/etcdctl");
const NODE_CHOWN: &str = include_str!("../../lab-bin/node/chown");
const NODE_MAPPED: &str = include_str!("../../lab-bin/node/lab-mapped");

/// Node commands that are the real tool with node paths mapped (symlinks to `lab-mapped`).
pub const MAPPED_COMMANDS: &[&str] = &["rm", "mkdir", "mv", "cp", "ls", "cat", "chmod", "touch", "scp"];

const TERRAFORM_MAIN_TF: &str = r#"# The lab's stand-in for automation/infrastructure: one libvirt domain per node.
# `terraform` here is the lab's script (bin/terraform); resources are
#   libvirt_domain.k8s-control-plane   (node k8s-control-plane-1)
#   libvirt_domain.k8s-worker-1
#   libvirt_domain.k8s-worker-2
"#;

/// Writes every script into `lab_dir`, executable, with `@LAB_DIR@` replaced.
pub fn install(lab_dir: &Path) -> Result<()> {
    let files: &[(&str, &str)] = &[
        ("bin/lab-common.sh", LAB_COMMON),
        ("bin/lab-node", LAB_NODE),
        ("bin/lab-fault", LAB_FAULT),
        ("bin/terraform", TERRAFORM),
        ("bin/k8s-restore.sh", K8S_RESTORE),
        ("etcd/run.sh", ETCD_RUN),
        ("host-setup/setup-host.sh", SETUP_HOST),
        ("host-setup/setup-libvirt-sudo.sh", SETUP_LIBVIRT),
        ("host-setup/setup-storage.sh", SETUP_STORAGE),
        ("host-setup/verify-setup.sh", VERIFY_SETUP),
        ("platform/platform-deploy.sh", PLATFORM_DEPLOY),
        ("node-bin/sudo", NODE_SUDO),
        ("node-bin/systemctl", NODE_SYSTEMCTL),
        ("node-bin/kubeadm", NODE_KUBEADM),
        ("node-bin/etcdctl", NODE_ETCDCTL),
        ("node-bin/chown", NODE_CHOWN),
        ("node-bin/lab-mapped", NODE_MAPPED),
    ];
    let dir_text = lab_dir.to_str().context("lab dir is not UTF-8")?;
    for (relative, text) in files {
        let path = lab_dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text.replace("@LAB_DIR@", dir_text))
            .with_context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    for name in MAPPED_COMMANDS {
        let link = lab_dir.join("node-bin").join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("lab-mapped", &link)?;
    }
    std::fs::create_dir_all(lab_dir.join("terraform"))?;
    std::fs::write(lab_dir.join("terraform/main.tf"), TERRAFORM_MAIN_TF)?;
    Ok(())
}
