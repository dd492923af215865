//! The lab: a simulated homelab that `dr` recovers. [`Lab::start`] brings up,
//! under one directory, the control API (the simulated Kubernetes API server
//! of `crate::kube`, whose objects it keeps in the etcd, or the recording
//! [`StubApi`]), a real TLS etcd, one real
//! unprivileged sshd per node on its own loopback address, the bastion tools
//! (terraform stand-in, host-setup and platform scripts), real tar.gz backups
//! and the ingress endpoint; writes `dr.toml` and `kubeconfig`; and tears it
//! all down on drop. Faults are injected with [`Lab::fault`]; [`Lab::status`]
//! reports whether the platform is healthy.
//!
//! Owns every process it starts (by pid file under the lab dir) and nothing
//! outside its directory, except `/run/sshd` (sshd's privilege-separation dir)
//! when running as root. Listens on loopback only. See `docs/LAB.md`.

pub mod backups;
pub mod etcd;
pub mod faults;
pub mod http;
pub mod pki;
pub mod process;
pub mod scripts;
pub mod status;
pub mod stub_api;
pub mod testing;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use self::etcd::EtcdClient;
use self::http::{HttpServer, Request, Response};
use self::process::{free_port, pid_alive, read_pid, run};
pub use self::faults::{inject_fault, FaultError};
pub use self::stub_api::StubApi;

/// The control-plane node's name.
pub const CONTROL_PLANE: &str = "k8s-control-plane-1";
/// The worker nodes' names.
pub const WORKERS: &[&str] = &["k8s-worker-1", "k8s-worker-2"];
/// The loopback address standing for the ingress (192.168.122.100 in the guide).
pub const INGRESS_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 100);

/// How long slow things take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Pace {
    /// Tests: no artificial delays.
    #[default]
    Fast,
    /// Demo: terraform, kubeadm, kubelet and platform deploys take seconds.
    Realistic,
}

impl Pace {
    pub fn as_str(self) -> &'static str {
        match self {
            Pace::Fast => "fast",
            Pace::Realistic => "realistic",
        }
    }
}

impl std::str::FromStr for Pace {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fast" => Ok(Pace::Fast),
            "realistic" => Ok(Pace::Realistic),
            other => bail!("unknown pace {other:?} (fast, realistic)"),
        }
    }
}

/// Which control API the lab runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApiChoice {
    /// The simulated Kubernetes API server (`crate::kube`).
    #[default]
    Simulated,
    /// The recording stub: no Kubernetes, for tests of etcd/ssh/scripts.
    Stub,
}

/// How to start a lab.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// The lab directory (created if missing); everything lives under it.
    pub dir: PathBuf,
    pub pace: Pace,
    /// The ssh login user; default `$USER`, else `whoami`.
    pub user: Option<String>,
    /// Ages of the backups written at start (default 2 h and 30 h).
    pub backup_ages: Vec<Duration>,
    pub api: ApiChoice,
}

impl LabOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            pace: Pace::Fast,
            user: None,
            backup_ages: vec![Duration::from_secs(2 * 3600), Duration::from_secs(30 * 3600)],
            api: ApiChoice::default(),
        }
    }
}

/// One node of the lab.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    /// `control-plane` or `worker`.
    pub role: String,
    pub ssh_host: String,
    pub ssh_port: u16,
    /// The node's root directory (its "disk").
    pub root: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeSummary {
    pub name: String,
    pub ssh_host: String,
    pub ssh_port: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SshSummary {
    pub user: String,
    pub key: PathBuf,
    pub known_hosts: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EtcdSummary {
    pub endpoints: Vec<String>,
    pub cacert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What `dr-lab up` prints and `<lab>/lab.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Summary {
    pub config: PathBuf,
    pub kubeconfig: PathBuf,
    pub nodes: Vec<NodeSummary>,
    pub ssh: SshSummary,
    pub etcd: EtcdSummary,
    pub ingress_url: String,
    pub backup_dir: PathBuf,
    /// The lab control API / Kubernetes API base URL.
    pub api_url: String,
    pub pace: Pace,
}

enum ApiBackend {
    Stub(StubApi),
    Kube(Box<crate::kube::ApiServer>),
}

impl ApiBackend {
    fn url(&self) -> String {
        match self {
            ApiBackend::Stub(stub) => stub.url(),
            ApiBackend::Kube(server) => server.url(),
        }
    }
}

/// A running lab; stops everything it started on drop.
pub struct Lab {
    dir: PathBuf,
    pace: Pace,
    user: String,
    nodes: Vec<NodeInfo>,
    etcd: EtcdClient,
    etcd_peer_url: String,
    backups: Vec<backups::Backup>,
    ingress: Option<HttpServer>,
    api: Option<ApiBackend>,
    stopped: bool,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab").field("dir", &self.dir).field("nodes", &self.nodes).finish()
    }
}

impl Lab {
    /// Starts every part of the lab and returns once each answers.
    pub fn start(options: LabOptions) -> Result<Lab> {
        std::fs::create_dir_all(&options.dir)?;
        let dir = std::fs::canonicalize(&options.dir)?;
        let user = match options.user.clone() {
            Some(user) => user,
            None => current_user()?,
        };
        let etcd_client_url = format!("https://127.0.0.1:{}", free_port(Ipv4Addr::LOCALHOST)?);
        let etcd_peer_url = format!("https://127.0.0.1:{}", free_port(Ipv4Addr::LOCALHOST)?);
        let mut nodes = Vec::new();
        for (index, name) in std::iter::once(CONTROL_PLANE).chain(WORKERS.iter().copied()).enumerate() {
            let address = Ipv4Addr::new(127, 0, 0, 10 + index as u8);
            nodes.push(NodeInfo {
                name: name.to_string(),
                role: if index == 0 { "control-plane" } else { "worker" }.to_string(),
                ssh_host: address.to_string(),
                ssh_port: free_port(address)?,
                root: dir.join("nodes").join(name),
            });
        }
        let api = match options.api {
            ApiChoice::Stub => ApiBackend::Stub(StubApi::start()?),
            ApiChoice::Simulated => {
                let mut kube_options = match options.pace {
                    Pace::Fast => crate::kube::KubeOptions::default(),
                    Pace::Realistic => crate::kube::KubeOptions::realistic(),
                };
                kube_options.nodes = nodes.iter().map(|n| (n.name.clone(), n.ssh_host.clone())).collect();
                let server = crate::kube::ApiServer::start_background(kube_options).context("starting the simulated API server")?;
                server.wait_healthy_blocking(Duration::from_secs(20)).context("the simulated API server did not become healthy")?;
                ApiBackend::Kube(Box::new(server))
            }
        };
        let api_url = api.url();
        let pki_dir = dir.join("pki/etcd");
        let etcd = EtcdClient {
            endpoint: etcd_client_url.clone(),
            cacert: pki_dir.join("ca.crt"),
            cert: pki_dir.join("healthcheck-client.crt"),
            key: pki_dir.join("healthcheck-client.key"),
        };
        let mut lab = Lab {
            dir: dir.clone(),
            pace: options.pace,
            user,
            nodes,
            etcd,
            etcd_peer_url,
            backups: Vec::new(),
            ingress: None,
            api: Some(api),
            stopped: false,
        };
        lab.provision(&api_url, &options).with_context(|| format!("starting the lab in {}", dir.display()))?;
        Ok(lab)
    }

    fn provision(&mut self, api_url: &str, options: &LabOptions) -> Result<()> {
        let dir = self.dir.clone();
        // A fresh lab: no node disks, journals or backups of an earlier one.
        for old in ["nodes", "backup", "sshd", "host", "terraform"] {
            let _ = std::fs::remove_dir_all(dir.join(old));
        }
        for old in ["bastion-journal.log", "faults.log", "etcd/etcd.log"] {
            let _ = std::fs::remove_file(dir.join(old));
        }
        for sub in ["bin", "etcd", "ssh", "sshd", "nodes", "terraform/state", "terraform/.terraform", "host", "backup"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let node_names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
        let env = format!(
            "# The lab's settings, sourced by every lab script.\n\
             LAB_API='{api_url}'\nLAB_PACE='{}'\nLAB_USER='{}'\nLAB_CONTROL_PLANE='{CONTROL_PLANE}'\n\
             LAB_NODES='{}'\nLAB_ETCD_CLIENT_URL='{}'\nLAB_ETCD_PEER_URL='{}'\n",
            self.pace.as_str(),
            self.user,
            node_names.join(" "),
            self.etcd.endpoint,
            self.etcd_peer_url
        );
        std::fs::write(dir.join("lab.env"), env)?;
        scripts::install(&dir)?;
        // Certificates: the bastion's copy under pki/, installed on the control plane.
        let mut sans = vec!["DNS:localhost".to_string(), format!("DNS:{CONTROL_PLANE}"), "IP:127.0.0.1".to_string()];
        sans.push(format!("IP:{}", self.nodes[0].ssh_host));
        pki::generate_etcd_pki(&dir.join("pki/etcd"), CONTROL_PLANE, &sans)?;
        // The cluster CA the control plane was initialised with (the bastion keeps a copy, the
        // PKI backup a rebuild restores before `kubeadm init` to keep the CA).
        pki::generate_cluster_ca(&dir.join("pki"))?;
        // The operator's ssh key.
        let key = dir.join("ssh/id_ed25519");
        if !key.exists() {
            run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "dr-lab"]).arg("-f").arg(&key))?;
        }
        std::fs::copy(dir.join("ssh/id_ed25519.pub"), dir.join("ssh/authorized_keys"))?;
        std::fs::write(dir.join("ssh/known_hosts"), "")?;
        for marker in ["packages", "libvirt", "storage"] {
            std::fs::write(dir.join("host").join(marker), "prepared by the lab\n")?;
        }
        match &self.api {
            Some(ApiBackend::Kube(server)) => server.write_kubeconfig(&dir.join("kubeconfig")).context("writing the kubeconfig")?,
            _ => std::fs::write(dir.join("kubeconfig"), stub_kubeconfig(api_url))?,
        }
        for node in self.nodes.clone() {
            let sshd_dir = dir.join("sshd").join(&node.name);
            std::fs::create_dir_all(&sshd_dir)?;
            std::fs::write(sshd_dir.join("address"), &node.ssh_host)?;
            std::fs::write(sshd_dir.join("port"), node.ssh_port.to_string())?;
            self.lab_node("create", &node.name)?;
            self.lab_node("trust", &node.name)?;
            std::fs::write(dir.join("terraform/state").join(&node.name), "")?;
            // The node as kubeadm left it: joined (workers) or initialised (control plane).
            let k8s = node.root.join("etc/kubernetes");
            std::fs::create_dir_all(&k8s)?;
            std::fs::copy(dir.join("kubeconfig"), k8s.join("kubelet.conf"))?;
            for unit in ["kubelet", "containerd"] {
                std::fs::write(node.root.join("run/units").join(unit), "active\n")?;
            }
            if node.role == "control-plane" {
                std::fs::copy(dir.join("kubeconfig"), k8s.join("admin.conf"))?;
                run(Command::new("cp").arg("-a").arg(dir.join("pki")).arg(&k8s))?;
            }
        }
        self.etcd_start()?;
        self.etcd.put("/lab/seed/created-by", "dr-lab")?;
        match &self.api {
            // From here on the API server's objects live in etcd (and so in every backup).
            Some(ApiBackend::Kube(server)) => server
                .attach_etcd_blocking(crate::kube::EtcdConfig {
                    endpoint: self.etcd.endpoint.clone(),
                    cacert: self.etcd.cacert.clone(),
                    // as a kube-apiserver does: its own etcd client certificate
                    cert: self.dir.join("pki/etcd/apiserver-etcd-client.crt"),
                    key: self.dir.join("pki/etcd/apiserver-etcd-client.key"),
                })
                .map_err(|e| anyhow::anyhow!("keeping the API server's objects in etcd: {}", e.message))?,
            _ => self.etcd.put("/registry/namespaces/default", "{\"kind\":\"Namespace\"}")?,
        }
        self.backups = backups::write_backups(&dir.join("backup"), &self.etcd, &options.backup_ages)?;
        self.etcd.put("/lab/seed/after-backups", "written after the newest backup")?;
        self.ingress = Some(start_ingress(api_url.to_string())?);
        std::fs::write(dir.join("dr.toml"), self.dr_toml())?;
        let summary = serde_json::to_string_pretty(&self.summary())?;
        std::fs::write(dir.join("lab.json"), summary)?;
        Ok(())
    }

    /// Runs `<lab>/bin/lab-node ACTION NODE`.
    fn lab_node(&self, action: &str, node: &str) -> Result<()> {
        run(Command::new(self.dir.join("bin/lab-node")).args([action, node]))?;
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pace(&self) -> Pace {
        self.pace
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    pub fn node(&self, name: &str) -> Result<&NodeInfo> {
        self.nodes.iter().find(|n| n.name == name).with_context(|| format!("no lab node {name}"))
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("dr.toml")
    }

    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    pub fn backup_dir(&self) -> PathBuf {
        self.dir.join("backup")
    }

    pub fn backups(&self) -> &[backups::Backup] {
        &self.backups
    }

    /// Takes a backup now (as the nightly job does): marker set, etcd snapshot, archive; it
    /// becomes the newest in the backup dir and in [`Lab::backups`].
    pub fn backup_now(&mut self) -> Result<backups::Backup> {
        let taken = backups::write_backups(&self.backup_dir(), &self.etcd, &[Duration::ZERO])?;
        let backup = taken.into_iter().next().context("no backup written")?;
        self.backups.push(backup.clone());
        Ok(backup)
    }

    /// The platform health report (what `dr-lab status --json` prints).
    pub fn status(&self) -> serde_json::Value {
        status::report(&self.dir)
    }

    pub fn ssh_key(&self) -> PathBuf {
        self.dir.join("ssh/id_ed25519")
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("ssh/known_hosts")
    }

    /// The control API / Kubernetes API base URL.
    pub fn api_url(&self) -> String {
        self.api.as_ref().map(ApiBackend::url).unwrap_or_default()
    }

    pub fn ingress_url(&self) -> String {
        self.ingress.as_ref().map(|s| format!("{}/", s.url())).unwrap_or_default()
    }

    /// The control requests the stub API received (`None` with the simulated API).
    pub fn stub_requests(&self) -> Option<Vec<Request>> {
        match self.api.as_ref()? {
            ApiBackend::Stub(stub) => Some(stub.requests()),
            ApiBackend::Kube(_) => None,
        }
    }

    /// The simulated API server, when the lab runs it.
    pub fn kube(&self) -> Option<&crate::kube::ApiServer> {
        match self.api.as_ref()? {
            ApiBackend::Kube(server) => Some(server),
            ApiBackend::Stub(_) => None,
        }
    }

    /// `GET /lab/v1/health` of the control API, as JSON.
    pub fn health(&self) -> Result<serde_json::Value> {
        let (status, body) = http::request("GET", &format!("{}/lab/v1/health", self.api_url()), None)?;
        if status != 200 {
            bail!("health answered {status}: {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    pub fn etcd(&self) -> &EtcdClient {
        &self.etcd
    }

    pub fn etcd_peer_url(&self) -> &str {
        &self.etcd_peer_url
    }

    /// The etcd data dir (in the control plane's root).
    pub fn etcd_data_dir(&self) -> PathBuf {
        self.dir.join("nodes").join(CONTROL_PLANE).join("var/lib/etcd")
    }

    pub fn etcd_pid(&self) -> Option<i32> {
        read_pid(&self.dir.join("etcd/etcd.pid")).filter(|pid| pid_alive(*pid))
    }

    pub fn etcd_start(&self) -> Result<()> {
        run(Command::new(self.dir.join("etcd/run.sh")).arg("start"))?;
        Ok(())
    }

    pub fn etcd_stop(&self) -> Result<()> {
        run(Command::new(self.dir.join("etcd/run.sh")).arg("stop"))?;
        Ok(())
    }

    /// The pid of a node's sshd, when it runs.
    pub fn sshd_pid(&self, node: &str) -> Option<i32> {
        read_pid(&self.dir.join("sshd").join(node).join("sshd.pid")).filter(|pid| pid_alive(*pid))
    }

    /// `ssh` to a node with strict host-key checking against the lab's known_hosts.
    pub fn ssh_command(&self, node: &str) -> Result<Command> {
        let node = self.node(node)?;
        let mut command = Command::new("ssh");
        command
            .args(["-F", "/dev/null", "-i"])
            .arg(self.ssh_key())
            .args(["-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"])
            .args(["-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts().display()))
            .args(["-p", &node.ssh_port.to_string()])
            .arg(format!("{}@{}", self.user, node.ssh_host));
        Ok(command)
    }

    /// Runs a shell command line on a node over ssh; a failed command is not an error here.
    pub fn ssh(&self, node: &str, command_line: &str) -> Result<Output> {
        let mut command = self.ssh_command(node)?;
        command.arg(command_line).stdin(Stdio::null());
        command.output().context("running ssh")
    }

    /// The node's journal lines (timestamp, command line).
    pub fn journal(&self, node: &str) -> Vec<String> {
        read_lines(&self.dir.join("nodes").join(node).join("journal.log"))
    }

    /// The bastion's journal (terraform and the host/platform scripts).
    pub fn bastion_journal(&self) -> Vec<String> {
        read_lines(&self.dir.join("bastion-journal.log"))
    }

    /// Runs the terraform stand-in in the terraform dir.
    pub fn terraform(&self, args: &[&str]) -> Result<Output> {
        Command::new(self.dir.join("bin/terraform"))
            .args(args)
            .current_dir(self.dir.join("terraform"))
            .stdin(Stdio::null())
            .output()
            .context("running terraform")
    }

    /// Trusts a node's current host key (after a re-created node got a new one).
    pub fn trust_host_key(&self, node: &str) -> Result<()> {
        self.lab_node("trust", node)
    }

    /// Injects a named fault (see `docs/LAB.md`).
    pub fn fault(&self, name: &str, node: Option<&str>) -> Result<()> {
        inject_fault(&self.dir, name, node)?;
        Ok(())
    }

    pub fn summary(&self) -> Summary {
        Summary {
            config: self.config_path(),
            kubeconfig: self.kubeconfig_path(),
            nodes: self
                .nodes
                .iter()
                .map(|n| NodeSummary { name: n.name.clone(), ssh_host: n.ssh_host.clone(), ssh_port: n.ssh_port })
                .collect(),
            ssh: SshSummary { user: self.user.clone(), key: self.ssh_key(), known_hosts: self.known_hosts() },
            etcd: EtcdSummary {
                endpoints: vec![self.etcd.endpoint.clone()],
                cacert: self.etcd.cacert.clone(),
                cert: self.etcd.cert.clone(),
                key: self.etcd.key.clone(),
            },
            ingress_url: self.ingress_url(),
            backup_dir: self.backup_dir(),
            api_url: self.api_url(),
            pace: self.pace,
        }
    }

    /// The `dr` configuration of this lab (`dr.toml`).
    pub fn dr_toml(&self) -> String {
        let q = |p: &Path| toml_string(&p.display().to_string());
        let mut out = String::new();
        out.push_str(&format!("# dr configuration for the lab in {} (written by dr-lab; see docs/LAB.md)\n\n", self.dir.display()));
        out.push_str(&format!("[cluster]\nkubeconfig = {}\ncontrol_plane = {}\napi_url = {}\n\n", q(&self.kubeconfig_path()), toml_string(CONTROL_PLANE), toml_string(&self.api_url())));
        for node in &self.nodes {
            out.push_str(&format!(
                "[[nodes]]\nname = {}\nrole = {}\nssh_host = {}\nssh_port = {}\n\n",
                toml_string(&node.name),
                toml_string(&node.role),
                toml_string(&node.ssh_host),
                node.ssh_port
            ));
        }
        out.push_str(&format!("[ssh]\nuser = {}\nkey = {}\nknown_hosts = {}\n\n", toml_string(&self.user), q(&self.ssh_key()), q(&self.known_hosts())));
        out.push_str(&format!(
            "[etcd]\nendpoints = [{}]\ncacert = {}\ncert = {}\nkey = {}\nname = {}\ninitial_cluster = {}\ninitial_cluster_token = \"lab-etcd\"\ninitial_advertise_peer_urls = {}\n# as seen on the control-plane node (node commands map it into the node root)\ndata_dir = \"/var/lib/etcd\"\n# the lab maps /tmp, not /var/lib/etcd.*, into the node root\nstaging_dir = \"/tmp\"\nnode = {}\n\n",
            toml_string(&self.etcd.endpoint),
            q(&self.etcd.cacert),
            q(&self.etcd.cert),
            q(&self.etcd.key),
            toml_string(CONTROL_PLANE),
            toml_string(&format!("{CONTROL_PLANE}={}", self.etcd_peer_url)),
            toml_string(&self.etcd_peer_url),
            toml_string(CONTROL_PLANE),
        ));
        out.push_str(&format!("[backup]\ndir = {}\nrpo_hours = 24\nwork_dir = {}\n\n", q(&self.backup_dir()), q(&self.dir.join("work"))));
        out.push_str(&format!(
            "[terraform]\ndir = {}\nbinary = {}\ncontrol_plane_target = \"libvirt_domain.k8s-control-plane\"\n\n",
            q(&self.dir.join("terraform")),
            q(&self.dir.join("bin/terraform"))
        ));
        out.push_str("[terraform.node_targets]\n");
        for node in self.nodes.iter().filter(|n| n.role != "control-plane") {
            out.push_str(&format!("{} = {}\n", toml_string(&node.name), toml_string(&format!("libvirt_domain.{}", node.name))));
        }
        out.push('\n');
        out.push_str(&format!(
            "[scripts]\nhost_setup_dir = {}\nplatform_dir = {}\nrestore = {}\n\n",
            q(&self.dir.join("host-setup")),
            q(&self.dir.join("platform")),
            q(&self.dir.join("bin/k8s-restore.sh"))
        ));
        out.push_str(&format!("[verify]\ningress_url = {}\n", toml_string(&self.ingress_url())));
        out
    }

    /// Stops every process of the lab (idempotent). Returns pids that would not die.
    pub fn stop(&mut self) -> Vec<i32> {
        if self.stopped {
            return Vec::new();
        }
        self.stopped = true;
        self.ingress = None;
        let left = stop_processes(&self.dir);
        self.api = None;
        left
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The lab processes recorded by pid file under `dir`: (what, pid).
pub fn recorded_processes(dir: &Path) -> Vec<(String, i32)> {
    let mut found = Vec::new();
    let mut pid_files = vec![("etcd".to_string(), dir.join("etcd/etcd.pid"))];
    if let Ok(entries) = std::fs::read_dir(dir.join("sshd")) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            pid_files.push((format!("sshd {name}"), entry.path().join("sshd.pid")));
        }
    }
    for (what, path) in pid_files {
        if let Some(pid) = read_pid(&path) {
            found.push((what, pid));
        }
    }
    found
}

/// Stops etcd and every node's sshd of the lab in `dir` by pid file.
/// Returns the pids still alive afterwards.
pub fn stop_processes(dir: &Path) -> Vec<i32> {
    let mut left = Vec::new();
    for (_, pid) in recorded_processes(dir) {
        if !process::terminate(pid, Duration::from_secs(1)) {
            left.push(pid);
        }
    }
    let _ = std::fs::remove_file(dir.join("etcd/etcd.pid"));
    if let Ok(entries) = std::fs::read_dir(dir.join("sshd")) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path().join("sshd.pid"));
        }
    }
    left
}

fn start_ingress(api_url: String) -> Result<HttpServer> {
    HttpServer::start(
        SocketAddr::from((INGRESS_ADDRESS, free_port(INGRESS_ADDRESS)?)),
        Arc::new(move |request: &Request| {
            if platform_healthy(&api_url) {
                let body = "<html><head><title>k8s_myHome</title></head><body>ingress ok</body></html>\n";
                Response { status: 200, content_type: "text/html; charset=utf-8", body: body.to_string() }
            } else {
                let _ = request;
                Response::text(503, "503 Service Temporarily Unavailable\n")
            }
        }),
    )
}

/// Whether `GET API/lab/v1/health` says healthy.
pub fn platform_healthy(api_url: &str) -> bool {
    match http::request("GET", &format!("{api_url}/lab/v1/health"), None) {
        Ok((200, body)) => match serde_json::from_str::<serde_json::Value>(&body) {
            Ok(value) => {
                value.get("healthy").and_then(serde_json::Value::as_bool).unwrap_or(false)
                    || matches!(value.get("status").and_then(serde_json::Value::as_str), Some("healthy" | "ok"))
            }
            Err(_) => false,
        },
        _ => false,
    }
}

fn stub_kubeconfig(api_url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: {api_url}\ncontexts:\n- name: lab\n  context:\n    cluster: lab\n    user: lab\ncurrent-context: lab\nusers:\n- name: lab\n  user:\n    token: lab\n"
    )
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).map(|t| t.lines().map(str::to_string).collect()).unwrap_or_default()
}

fn current_user() -> Result<String> {
    if let Ok(user) = std::env::var("USER") {
        if !user.is_empty() {
            return Ok(user);
        }
    }
    let output = run(&mut Command::new("whoami"))?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// A TOML basic string.
pub fn toml_string(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_strings_escape_quotes_backslashes_and_controls() {
        assert_eq!(toml_string("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
        assert_eq!(toml_string("/tmp/lab"), "\"/tmp/lab\"");
    }

    #[test]
    fn pace_parses_its_two_names_only() {
        assert_eq!("fast".parse::<Pace>().ok(), Some(Pace::Fast));
        assert_eq!("realistic".parse::<Pace>().ok(), Some(Pace::Realistic));
        assert!("slow".parse::<Pace>().is_err());
        assert_eq!(Pace::Realistic.as_str(), "realistic");
    }

    #[test]
    fn stopping_processes_of_an_empty_dir_finds_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(recorded_processes(dir.path()).is_empty());
        assert!(stop_processes(dir.path()).is_empty());
    }

    #[test]
    fn platform_health_follows_the_stub_api() {
        let stub = StubApi::start().expect("stub");
        assert!(platform_healthy(&stub.url()));
        stub.set_healthy(false);
        assert!(!platform_healthy(&stub.url()));
        assert!(!platform_healthy("http://127.0.0.1:9"), "nothing listening is unhealthy");
    }
}
