//! `dr.toml`: the one typed configuration every workflow that reaches the
//! cluster reads ([`Config`]): the inventory (cluster, nodes), ssh, etcd,
//! backups, terraform, the host scripts, verification URLs, RTO targets, and
//! `dr serve`'s `[serve]`, `[[alerts]]` and `[escalation]`.
//!
//! Owns: loading ([`Config::load`], [`Config::parse`]), refusing what is
//! wrong with the file's name, line, column and the key's dotted path
//! ([`ConfigError`], [`Problem`]): syntax, unknown keys (with a did-you-mean),
//! wrong types, missing keys, inline secrets, and the semantic checks
//! (`validate.rs`); every section optional, asked for by what needs it
//! ([`MissingSection`]); resolving relative paths against the file's directory;
//! the [`Config::digest`] a run is pinned to; and the views the actions take
//! (an [`SshTarget`] per node, the [`EtcdConnection`], ...).
//!
//! Refuses: secrets inline (only `*_file` paths to them), echoing the value of
//! a secret-looking key, and touching the network — reaching what the file
//! names is `probe.rs` (`dr config check --connect`).

mod introspect;
pub mod probe;
mod source;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::actions::backup::BackupCheckParams;
use crate::actions::etcd::EtcdConnection;
use crate::actions::kube::KubeConnection;
use crate::actions::ssh::SshTarget;

/// Where `dr` looks when neither `--config` nor `DR_CONFIG` is given.
pub const DEFAULT_PATH: &str = "/etc/dr/dr.toml";

/// The whole of `dr.toml`, validated, with every relative path resolved
/// against the file's directory.
///
/// Every section is optional: a file holds what the commands it serves need
/// (`dr serve` alone needs none of the inventory). What needs a section asks
/// for it through its accessor ([`Config::etcd`], ...), which names the
/// section and the file when it is absent ([`MissingSection`]); rules across
/// sections (a node named by `[etcd]`, ...) apply when both are present.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Cluster>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<Node>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<Ssh>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<Etcd>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<Backup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terraform: Option<Terraform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scripts: Option<Scripts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<Verify>,
    #[serde(default)]
    pub targets: Targets,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve: Option<Serve>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<AlertRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<Escalation>,
    /// The file this was read from (not part of the digest).
    #[serde(skip)]
    path: PathBuf,
}

/// `[cluster]`: how to reach the API server, and which node is the control plane.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// The kubeconfig file `dr` uses (a path; its credentials stay in it).
    pub kubeconfig: PathBuf,
    /// The kubeconfig context; its current context when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// The API server's URL, for messages and when no kubeconfig answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// The name of the control-plane node (one of `[[nodes]]`).
    pub control_plane: String,
}

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    ControlPlane,
    Worker,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::ControlPlane => "control-plane",
            Role::Worker => "worker",
        })
    }
}

/// A TCP port, 1-65535.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u16")]
pub struct Port(u16);

impl Port {
    pub fn get(self) -> u16 {
        self.0
    }
}

impl TryFrom<i64> for Port {
    type Error = String;
    fn try_from(value: i64) -> Result<Self, String> {
        match u16::try_from(value) {
            Ok(port) if port > 0 => Ok(Port(port)),
            _ => Err(format!("expected a port number 1-65535, found {value}")),
        }
    }
}

impl From<Port> for u16 {
    fn from(port: Port) -> u16 {
        port.0
    }
}

fn default_ssh_port() -> Port {
    Port(22)
}

/// `[[nodes]]`: one machine of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// The Kubernetes node name (also how errors and `--param node=` name it).
    pub name: String,
    pub role: Role,
    /// Host name or address sshd listens on.
    pub ssh_host: String,
    #[serde(default = "default_ssh_port")]
    pub ssh_port: Port,
}

/// `[ssh]`: as whom and with which key `dr` logs in to the nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ssh {
    pub user: String,
    /// The private key file; ssh-agent when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// The `known_hosts` file host keys are strictly checked against.
    pub known_hosts: PathBuf,
    /// Connect timeout in milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
}

fn default_connect_timeout_ms() -> u64 {
    10_000
}

/// `[etcd]`: the client connection (TLS material by path) and the cluster
/// flags a snapshot restore needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Etcd {
    /// Client URLs, `https://HOST:PORT`.
    pub endpoints: Vec<String>,
    pub cacert: PathBuf,
    pub cert: PathBuf,
    /// The client key file (a path, never the key).
    pub key: PathBuf,
    /// The member name (`--name`).
    pub name: String,
    /// `--initial-cluster`, `NAME=PEER_URL[,...]`.
    pub initial_cluster: String,
    #[serde(default = "default_cluster_token")]
    pub initial_cluster_token: String,
    pub initial_advertise_peer_urls: String,
    /// The data directory as seen on the node etcd runs on.
    #[serde(default = "crate::actions::etcd::default_data_dir")]
    pub data_dir: String,
    /// Where a restore builds the new data directory and keeps the old one,
    /// as seen on the etcd node (same filesystem as `data_dir`).
    #[serde(default = "crate::actions::etcd::default_staging_dir")]
    pub staging_dir: String,
    /// The node etcd runs on (one of `[[nodes]]`): restores ssh there.
    pub node: String,
}

fn default_cluster_token() -> String {
    "etcd-cluster".to_owned()
}

/// `[backup]`: where the backups are and how old the newest may be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backup {
    pub dir: PathBuf,
    /// Recovery point objective: the newest backup must be younger.
    pub rpo_hours: u64,
    /// The backup files' names (`*` any run, `?` one character).
    #[serde(default = "default_pattern")]
    pub pattern: String,
    /// Where recoveries extract backups and keep the snapshot they restore, on the bastion.
    #[serde(default = "default_work_dir")]
    pub work_dir: PathBuf,
}

fn default_work_dir() -> PathBuf {
    PathBuf::from("/var/tmp/dr")
}

fn default_pattern() -> String {
    crate::actions::backup::DEFAULT_PATTERN.to_owned()
}

/// `[terraform]`: the infrastructure code that re-creates the VMs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Terraform {
    /// Where terraform runs (`terraform -chdir`).
    pub dir: PathBuf,
    /// The terraform program: a path, or a bare name looked up on `PATH`.
    #[serde(default = "default_terraform")]
    pub binary: PathBuf,
    /// The `-target` that re-creates the control-plane VM.
    pub control_plane_target: String,
    /// The `-target` per other node, by node name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_targets: BTreeMap<String, String>,
}

fn default_terraform() -> PathBuf {
    PathBuf::from("terraform")
}

/// `[scripts]`: the host-setup and platform scripts of the guide.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scripts {
    /// `setup-host.sh`, `setup-libvirt-sudo.sh`, `setup-storage.sh`, `verify-setup.sh`.
    pub host_setup_dir: PathBuf,
    /// `platform-deploy.sh`.
    pub platform_dir: PathBuf,
    /// The restore script, called with the backup archive.
    pub restore: PathBuf,
}

/// `[verify]`: what must answer after a recovery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    pub ingress_url: String,
    /// More URLs to check, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub urls: BTreeMap<String, String>,
}

/// `[targets]`: the RTO per failure level, in minutes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Targets {
    #[serde(default = "l1")]
    pub l1_minutes: u32,
    #[serde(default = "l2")]
    pub l2_minutes: u32,
    #[serde(default = "l3")]
    pub l3_minutes: u32,
    #[serde(default = "l4")]
    pub l4_minutes: u32,
}

fn l1() -> u32 {
    15
}
fn l2() -> u32 {
    60
}
fn l3() -> u32 {
    120
}
fn l4() -> u32 {
    240
}

impl Default for Targets {
    fn default() -> Self {
        Targets { l1_minutes: l1(), l2_minutes: l2(), l3_minutes: l3(), l4_minutes: l4() }
    }
}

impl Targets {
    /// The RTO target of failure level 1-4, in minutes.
    pub fn minutes(&self, level: u8) -> Option<u32> {
        match level {
            1 => Some(self.l1_minutes),
            2 => Some(self.l2_minutes),
            3 => Some(self.l3_minutes),
            4 => Some(self.l4_minutes),
            _ => None,
        }
    }
}

/// `[serve]`: the HTTP listener of `dr serve` (Alertmanager's webhook, `/metrics`).
/// Without it (and without `dr serve --listen`) the daemon listens on nothing but
/// its control socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Serve {
    /// `ADDR:PORT`, e.g. `127.0.0.1:9464`. Loopback unless `token_file` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// A file holding the bearer token the webhook requires (`Authorization:
    /// Bearer …`); required when `listen` is not a loopback address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// The largest request body accepted, in bytes (default 1 MiB).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
}

fn default_max_body() -> u64 {
    1 << 20
}

/// `[[alerts]]`: a firing alert that starts a workflow. Matched on `alertname`
/// and every label in `labels` (equal values); `params` values may name the
/// alert's labels as `$labels.NAME`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    pub alertname: String,
    /// Further labels the alert must carry, with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub workflow: String,
    /// Workflow parameters; `$labels.NAME` is replaced by the alert's label.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// Whether the run starts without a person. When absent: only a level-1
    /// workflow does; any other waits at a gate for `dr approve` (and people are told).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automatic: Option<bool>,
}

/// `[escalation]`: who is told what, per failure level.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Escalation {
    #[serde(default)]
    pub routes: Vec<EscalationRoute>,
}

/// How a route delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteKind {
    /// A Slack-compatible incoming webhook (`{"text": …}` POSTed to the URL in `url_file`).
    Slack,
    /// Mail over SMTP.
    Email,
    /// PagerDuty Events API v2 (`routing_key_file`; `events_url` to override the endpoint).
    Pagerduty,
}

impl fmt::Display for RouteKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RouteKind::Slack => "slack",
            RouteKind::Email => "email",
            RouteKind::Pagerduty => "pagerduty",
        })
    }
}

/// How an SMTP connection is secured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmtpTls {
    /// Plain SMTP (a relay on the bastion itself).
    None,
    /// STARTTLS, required (the default).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// `[[escalation.routes]]`: one destination, the levels it is told about, and
/// what its kind needs. Secrets (webhook URLs, keys, passwords) live in files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationRoute {
    pub name: String,
    pub kind: RouteKind,
    /// The failure levels (1-4) whose runs this route is told about.
    pub levels: Vec<u8>,
    /// slack: a file holding the webhook URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_file: Option<PathBuf>,
    /// pagerduty: a file holding the integration's routing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key_file: Option<PathBuf>,
    /// pagerduty: the Events API v2 endpoint (default PagerDuty's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_url: Option<String>,
    /// email: the SMTP server, `HOST:PORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<String>,
    /// email: how the connection is secured (default `starttls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<SmtpTls>,
    /// email: the sender address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// email: the recipients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    /// email: the SMTP user, when the server wants one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// email: a file holding that user's password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

/// One thing wrong with the file, located.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// The dotted path of the key, e.g. `nodes[1].ssh_port`.
    pub key: String,
    /// What is wrong and what is expected (never a secret's value).
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}: {}", self.file.display(), self.line, self.column, self.key, self.message)
    }
}

/// Every problem found, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// Why a configuration could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is not there.
    #[error("{path}: no configuration file there; write one (see docs/CONFIG.md) or name another with --config FILE or DR_CONFIG")]
    Missing { path: PathBuf },
    /// The file is there but cannot be read.
    #[error("{path}: cannot read the configuration: {source}; check its permissions or name another with --config FILE")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is wrong: each problem as `FILE:LINE:COL: KEY: message`.
    #[error("{0}")]
    Invalid(Problems),
}

/// A section something needs and the file does not have.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{section} in {}, which has no such section; add it (see docs/CONFIG.md)", path.display())]
pub struct MissingSection {
    /// As written in the file: `[etcd]`, `[[nodes]]`.
    pub section: &'static str,
    /// The configuration file.
    pub path: PathBuf,
}

impl ConfigError {
    /// The located problems (empty unless the file was read and is wrong).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(problems) => &problems.0,
            _ => &[],
        }
    }
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ConfigError::Missing { path: path.to_owned() }),
            Err(source) => return Err(ConfigError::Unreadable { path: path.to_owned(), source }),
        };
        Config::parse(&text, path)
    }

    /// Validates `text` as if read from `path` (which names the file in
    /// errors and anchors relative paths).
    pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let source = source::Source::parse(text, path).map_err(|p| ConfigError::Invalid(Problems(vec![p])))?;
        let mut problems = source.check_keys();
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(Problems(problems)));
        }
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Invalid(Problems(vec![source.serde_problem(&e)])))?;
        problems.extend(validate::validate(&config, &source));
        if !problems.is_empty() {
            problems.sort_by_key(|p| (p.line, p.column));
            return Err(ConfigError::Invalid(Problems(problems)));
        }
        config.path = path.to_owned();
        // Absolute, so the resolved paths (and the digest) do not depend on the working directory.
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let base = absolute.parent().map(Path::to_path_buf).unwrap_or_default();
        config.resolve_paths(&base);
        Ok(config)
    }

    /// The file this configuration was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SHA-256 (hex) of the canonical form: the values as loaded (relative
    /// paths resolved), not the text — comments, order and whitespace do
    /// not change it; any value the workflows read does. `dr serve`'s own
    /// sections (`[serve]`, `[[alerts]]`, `[escalation]`) are left out: a
    /// route or an alert rule added does not change what a run does, and must
    /// not stop the runs in progress from resuming after the service restarts.
    pub fn digest(&self) -> String {
        let mut workflows_read = self.clone();
        workflows_read.serve = None;
        workflows_read.alerts.clear();
        workflows_read.escalation = None;
        // Plain data with string keys: JSON fails only on a path that is not
        // UTF-8 (a config file under such a directory); then the Debug form,
        // which is as deterministic, stands in.
        let canonical = serde_json::to_vec(&workflows_read).unwrap_or_else(|_| format!("{workflows_read:?}").into_bytes());
        let digest = Sha256::digest(&canonical);
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn section<'a, T>(&self, section: &'static str, value: Option<&'a T>) -> Result<&'a T, MissingSection> {
        value.ok_or_else(|| MissingSection { section, path: self.path.clone() })
    }

    /// `[cluster]`, or which file lacks it.
    pub fn cluster(&self) -> Result<&Cluster, MissingSection> {
        self.section("[cluster]", self.cluster.as_ref())
    }

    /// The `[[nodes]]` (at least one), or which file has none.
    pub fn nodes(&self) -> Result<&[Node], MissingSection> {
        if self.nodes.is_empty() {
            return Err(MissingSection { section: "[[nodes]]", path: self.path.clone() });
        }
        Ok(&self.nodes)
    }

    /// `[ssh]`, or which file lacks it.
    pub fn ssh(&self) -> Result<&Ssh, MissingSection> {
        self.section("[ssh]", self.ssh.as_ref())
    }

    /// `[etcd]`, or which file lacks it.
    pub fn etcd(&self) -> Result<&Etcd, MissingSection> {
        self.section("[etcd]", self.etcd.as_ref())
    }

    /// `[backup]`, or which file lacks it.
    pub fn backup(&self) -> Result<&Backup, MissingSection> {
        self.section("[backup]", self.backup.as_ref())
    }

    /// `[terraform]`, or which file lacks it.
    pub fn terraform(&self) -> Result<&Terraform, MissingSection> {
        self.section("[terraform]", self.terraform.as_ref())
    }

    /// `[scripts]`, or which file lacks it.
    pub fn scripts(&self) -> Result<&Scripts, MissingSection> {
        self.section("[scripts]", self.scripts.as_ref())
    }

    /// `[verify]`, or which file lacks it.
    pub fn verify(&self) -> Result<&Verify, MissingSection> {
        self.section("[verify]", self.verify.as_ref())
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The control-plane node (validated to exist when `[cluster]` and `[[nodes]]` are both there).
    pub fn control_plane(&self) -> Option<&Node> {
        self.node(&self.cluster.as_ref()?.control_plane)
    }

    /// How to ssh to `node`, with strict host keys (needs `[ssh]`).
    pub fn ssh_target(&self, node: &Node) -> Result<SshTarget, MissingSection> {
        let ssh = self.ssh()?;
        let mut target = SshTarget::new(&node.ssh_host, node.ssh_port.get(), &ssh.user, &ssh.known_hosts);
        if let Some(key) = &ssh.key {
            target = target.with_key(key);
        }
        target.connect_timeout_ms = ssh.connect_timeout_ms;
        Ok(target)
    }

    /// How to reach etcd (needs `[etcd]`).
    pub fn etcd_connection(&self) -> Result<EtcdConnection, MissingSection> {
        let etcd = self.etcd()?;
        Ok(EtcdConnection {
            endpoints: etcd.endpoints.clone(),
            cacert: etcd.cacert.clone(),
            cert: etcd.cert.clone(),
            key: etcd.key.clone(),
            timeout_ms: 5_000,
        })
    }

    /// How to reach the API server (needs `[cluster]`).
    pub fn kube_connection(&self) -> Result<KubeConnection, MissingSection> {
        let cluster = self.cluster()?;
        Ok(KubeConnection { kubeconfig: Some(cluster.kubeconfig.clone()), context: cluster.context.clone() })
    }

    /// The backup check against the RPO (needs `[backup]`).
    pub fn backup_check(&self) -> Result<BackupCheckParams, MissingSection> {
        let backup = self.backup()?;
        let mut params = BackupCheckParams::new(&backup.dir);
        params.pattern = backup.pattern.clone();
        params.rpo_secs = backup.rpo_hours.saturating_mul(3600);
        Ok(params)
    }

    /// The terraform `-target` that re-creates `node`, if the file names one
    /// (none without `[terraform]`).
    pub fn terraform_target(&self, node: &Node) -> Option<&str> {
        let terraform = self.terraform.as_ref()?;
        match node.role {
            Role::ControlPlane => Some(terraform.control_plane_target.as_str()),
            Role::Worker => terraform.node_targets.get(&node.name).map(String::as_str),
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        };
        if let Some(cluster) = &mut self.cluster {
            resolve(&mut cluster.kubeconfig);
        }
        if let Some(ssh) = &mut self.ssh {
            if let Some(key) = &mut ssh.key {
                resolve(key);
            }
            resolve(&mut ssh.known_hosts);
        }
        if let Some(etcd) = &mut self.etcd {
            for path in [&mut etcd.cacert, &mut etcd.cert, &mut etcd.key] {
                resolve(path);
            }
        }
        if let Some(backup) = &mut self.backup {
            resolve(&mut backup.dir);
            resolve(&mut backup.work_dir);
        }
        if let Some(terraform) = &mut self.terraform {
            resolve(&mut terraform.dir);
            // A bare program name is looked up on PATH when run.
            if terraform.binary.components().count() > 1 {
                resolve(&mut terraform.binary);
            }
        }
        if let Some(scripts) = &mut self.scripts {
            for path in [&mut scripts.host_setup_dir, &mut scripts.platform_dir, &mut scripts.restore] {
                resolve(path);
            }
        }
        if let Some(serve) = &mut self.serve {
            if let Some(token) = &mut serve.token_file {
                resolve(token);
            }
        }
        if let Some(escalation) = &mut self.escalation {
            for route in &mut escalation.routes {
                for path in [&mut route.url_file, &mut route.routing_key_file, &mut route.password_file].into_iter().flatten() {
                    resolve(path);
                }
            }
        }
    }
}

