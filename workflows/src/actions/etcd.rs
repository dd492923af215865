//! etcd actions (`etcd-client`, TLS with client certificates): member list
//! ([`EtcdMemberList`]), endpoint status and health ([`EtcdEndpointHealth`]),
//! alarms ([`EtcdAlarmList`]), snapshot save to the bastion with the
//! SHA-256 check etcd appends ([`EtcdSnapshotSave`]), and snapshot restore on
//! the control-plane node over SSH ([`EtcdSnapshotRestore`]).
//!
//! Owns: talking to etcd and the restore procedure of the DR guide (trial
//! restore first, then stop, swap data directories, ownership and mode 0700,
//! start). Refuses: calling a snapshot good without checking its hash,
//! touching the live data directory before a trial restore succeeded, and
//! ever removing the live data directory or a kept one: the swap only renames,
//! never onto a non-empty directory.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use dr_orchestrator::{ActionCtx, ActionError, TypedAction};
use etcd_client::{AlarmAction, AlarmType, Certificate, Client, ConnectOptions, Identity, TlsOptions};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ssh::{self, hex, shell_quote, RunOptions, SshTarget};

/// How to reach etcd: endpoints and the TLS material (paths, never contents).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdConnection {
    pub endpoints: Vec<String>,
    pub cacert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Connect and per-request timeout.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    5_000
}

impl EtcdConnection {
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }

    fn options(&self) -> Result<ConnectOptions, ActionError> {
        let read = |what: &str, path: &Path| {
            std::fs::read(path).map_err(|e| {
                ActionError::permanent(format!(
                    "cannot read the etcd {what} {}: {e}; check the etcd.{what} setting",
                    path.display()
                ))
            })
        };
        let ca = read("cacert", &self.cacert)?;
        let cert = read("cert", &self.cert)?;
        let key = read("key", &self.key)?;
        let tls = TlsOptions::new().ca_certificate(Certificate::from_pem(ca)).identity(Identity::from_pem(cert, key));
        Ok(ConnectOptions::new()
            .with_tls(tls)
            .with_connect_timeout(self.timeout())
            .with_timeout(self.timeout())
            .with_keep_alive(Duration::from_secs(10), self.timeout()))
    }

    /// A client of one endpoint.
    pub async fn connect(&self, endpoint: &str) -> Result<Client, ActionError> {
        let options = self.options()?;
        let connect = Client::connect([endpoint], Some(options));
        match tokio::time::timeout(self.timeout(), connect).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(unreachable(endpoint, &e.to_string())),
            Err(_) => Err(unreachable(endpoint, "connect timed out")),
        }
    }

    /// Runs `call` with a timeout and turns its failure into an error naming the endpoint.
    async fn call<T>(
        &self,
        endpoint: &str,
        what: &str,
        call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, ActionError> {
        match tokio::time::timeout(self.timeout(), call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(unreachable(endpoint, &format!("{what}: {e}"))),
            Err(_) => Err(unreachable(endpoint, &format!("{what} timed out after {} ms", self.timeout_ms))),
        }
    }
}

fn unreachable(endpoint: &str, why: &str) -> ActionError {
    ActionError::retryable(format!(
        "etcd at {endpoint} did not answer ({why}); check that etcd runs on the control plane \
         (systemctl status etcd) and that the endpoint and certificates are right"
    ))
}

/// One member as `etcdctl member list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub id: String,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// One endpoint as `etcdctl endpoint status` + `endpoint health` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointStatus {
    pub endpoint: String,
    pub healthy: bool,
    pub error: Option<String>,
    pub member_id: Option<String>,
    pub version: Option<String>,
    pub db_size: Option<i64>,
    pub leader: Option<String>,
    pub is_leader: bool,
    pub raft_term: Option<u64>,
    pub raft_index: Option<u64>,
    pub revision: Option<i64>,
    pub errors: Vec<String>,
}

/// An active alarm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmInfo {
    pub member_id: String,
    pub alarm: String,
}

/// The members, asked of the first endpoint that answers.
pub async fn member_list(etcd: &EtcdConnection) -> Result<(String, Vec<MemberInfo>), ActionError> {
    let mut last = None;
    for endpoint in &etcd.endpoints {
        let result = async {
            let mut client = etcd.connect(endpoint).await?;
            etcd.call(endpoint, "member list", client.member_list()).await
        }
        .await;
        match result {
            Ok(response) => {
                let members = response
                    .members()
                    .iter()
                    .map(|m| MemberInfo {
                        id: format!("{:x}", m.id()),
                        name: m.name().to_owned(),
                        peer_urls: m.peer_urls().to_vec(),
                        client_urls: m.client_urls().to_vec(),
                        is_learner: m.is_learner(),
                    })
                    .collect();
                return Ok((endpoint.clone(), members));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| ActionError::permanent("no etcd endpoints configured (etcd.endpoints)")))
}

/// Status and health of one endpoint; an unreachable one is reported, not an error.
pub async fn endpoint_status(etcd: &EtcdConnection, endpoint: &str) -> EndpointStatus {
    let mut status = EndpointStatus {
        endpoint: endpoint.to_owned(),
        healthy: false,
        error: None,
        member_id: None,
        version: None,
        db_size: None,
        leader: None,
        is_leader: false,
        raft_term: None,
        raft_index: None,
        revision: None,
        errors: Vec::new(),
    };
    let mut client = match etcd.connect(endpoint).await {
        Ok(client) => client,
        Err(e) => {
            status.error = Some(e.message);
            return status;
        }
    };
    match etcd.call(endpoint, "status", client.status()).await {
        Ok(response) => {
            let member = response.header().map(|h| h.member_id());
            status.member_id = member.map(|m| format!("{m:x}"));
            status.revision = response.header().map(|h| h.revision());
            status.version = Some(response.version().to_owned());
            status.db_size = Some(response.db_size());
            status.leader = Some(format!("{:x}", response.leader()));
            status.is_leader = member == Some(response.leader());
            status.raft_term = Some(response.raft_term());
            status.raft_index = Some(response.raft_index());
            status.errors = response.errors().to_vec();
        }
        Err(e) => {
            status.error = Some(e.message);
            return status;
        }
    }
    // `etcdctl endpoint health`: a linearizable read of the key "health";
    // permission denied still proves a working raft.
    match etcd.call(endpoint, "health read", client.get("health", None)).await {
        Ok(_) => status.healthy = status.errors.is_empty(),
        Err(e) if e.message.contains("permission denied") => status.healthy = status.errors.is_empty(),
        Err(e) => status.error = Some(e.message),
    }
    if !status.errors.is_empty() && status.error.is_none() {
        status.error = Some(status.errors.join("; "));
    }
    status
}

/// Active alarms, asked of the first endpoint that answers.
pub async fn alarm_list(etcd: &EtcdConnection) -> Result<Vec<AlarmInfo>, ActionError> {
    let mut last = None;
    for endpoint in &etcd.endpoints {
        let result = async {
            let mut client = etcd.connect(endpoint).await?;
            etcd.call(endpoint, "alarm list", client.alarm(AlarmAction::Get, AlarmType::None, None)).await
        }
        .await;
        match result {
            Ok(response) => {
                return Ok(response
                    .alarms()
                    .iter()
                    .map(|a| AlarmInfo { member_id: format!("{:x}", a.member_id()), alarm: format!("{:?}", a.alarm()) })
                    .collect())
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| ActionError::permanent("no etcd endpoints configured (etcd.endpoints)")))
}

// ---------------------------------------------------------------------------
// Snapshots

/// A snapshot file that passed its check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub path: PathBuf,
    /// Where it came from (save only).
    pub endpoint: Option<String>,
    /// The store revision when the snapshot was taken (save only: the
    /// member's revision just before the stream started).
    pub revision: Option<i64>,
    pub size: u64,
    /// Hex SHA-256 of the whole file.
    pub sha256: String,
    /// Hex SHA-256 etcd appended (of the database before it).
    pub db_sha256: String,
}

/// Checks the SHA-256 etcd appends to a snapshot: the last 32 bytes are the
/// SHA-256 of everything before them. Blocking.
pub fn verify_snapshot(path: &Path) -> Result<SnapshotInfo, ActionError> {
    let bad = |why: String| {
        ActionError::permanent(format!(
            "etcd snapshot {} fails its check: {why}; take a new snapshot (etcd.snapshot-save) or use another backup",
            path.display()
        ))
    };
    let mut file = std::fs::File::open(path)
        .map_err(|e| ActionError::permanent(format!("cannot open etcd snapshot {}: {e}", path.display())))?;
    let size = file
        .metadata()
        .map_err(|e| ActionError::permanent(format!("cannot stat etcd snapshot {}: {e}", path.display())))?
        .len();
    if size <= 32 {
        return Err(bad(format!("only {size} bytes")));
    }
    let body = size - 32;
    let mut db_hasher = Sha256::new();
    let mut file_hasher = Sha256::new();
    let mut left = body;
    let mut buf = vec![0u8; 256 * 1024];
    while left > 0 {
        let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        file.read_exact(&mut buf[..want]).map_err(|e| bad(format!("cannot read: {e}")))?;
        db_hasher.update(&buf[..want]);
        file_hasher.update(&buf[..want]);
        left -= want as u64;
    }
    let mut appended = [0u8; 32];
    file.seek(SeekFrom::Start(body)).map_err(|e| bad(format!("cannot seek: {e}")))?;
    file.read_exact(&mut appended).map_err(|e| bad(format!("cannot read its hash: {e}")))?;
    file_hasher.update(appended);
    let computed = db_hasher.finalize();
    if computed.as_slice() != appended {
        return Err(bad(format!(
            "the sha256 of its {body} database bytes is {}, but it ends with {} (truncated or corrupt)",
            hex(&computed),
            hex(&appended)
        )));
    }
    Ok(SnapshotInfo {
        path: path.to_path_buf(),
        endpoint: None,
        revision: None,
        size,
        sha256: hex(&file_hasher.finalize()),
        db_sha256: hex(&appended),
    })
}

/// Streams a snapshot from the first healthy endpoint into `path` (via a
/// temporary file, fsynced, checked, renamed), until the attempt is
/// cancelled or its deadline passes.
pub async fn snapshot_save(etcd: &EtcdConnection, path: &Path, ctx: &ActionCtx) -> Result<SnapshotInfo, ActionError> {
    let mut failures = Vec::new();
    for endpoint in &etcd.endpoints {
        let status = endpoint_status(etcd, endpoint).await;
        if !status.healthy {
            failures.push(format!("{endpoint}: {}", status.error.unwrap_or_else(|| "unhealthy".to_owned())));
            continue;
        }
        match save_from(etcd, endpoint, status.revision, path, ctx).await {
            Ok(info) => return Ok(info),
            Err(e) if !e.retryable => return Err(e),
            Err(e) => failures.push(e.message),
        }
    }
    Err(ActionError::retryable(format!(
        "no healthy etcd member gave a snapshot: {}; check the members (etcd.endpoint-health)",
        if failures.is_empty() { "no endpoints configured".to_owned() } else { failures.join("; ") }
    )))
}

async fn save_from(
    etcd: &EtcdConnection,
    endpoint: &str,
    revision: Option<i64>,
    path: &Path,
    ctx: &ActionCtx,
) -> Result<SnapshotInfo, ActionError> {
    let mut client = etcd.connect(endpoint).await?;
    let mut stream = etcd.call(endpoint, "snapshot", client.snapshot()).await?;
    let partial = path.with_extension("partial");
    let mut file = std::fs::File::create(&partial).map_err(|e| {
        ActionError::permanent(format!("cannot create {}: {e}; check the snapshot directory", partial.display()))
    })?;
    let streamed = async {
        loop {
            let message = match stream.message().await {
                Err(e) => return Err(unreachable(endpoint, &format!("snapshot stream broke: {e}"))),
                Ok(None) => break,
                Ok(Some(message)) => message,
            };
            file.write_all(message.blob())
                .map_err(|e| ActionError::permanent(format!("cannot write {}: {e}", partial.display())))?;
        }
        file.sync_all().map_err(|e| ActionError::permanent(format!("cannot fsync {}: {e}", partial.display())))
    };
    let result = ctx.guard(&format!("the snapshot from {endpoint}"), streamed).await;
    drop(file);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    let checked = partial.clone();
    let verified = super::blocking(ctx, "the snapshot check", move |_| Ok(verify_snapshot(&checked))).await?;
    let mut info = match verified {
        Ok(info) => info,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            // A member that streams a corrupt snapshot: another one (or a retry) may do better.
            return Err(ActionError::retryable(format!("snapshot streamed from {endpoint} is corrupt: {}", e.message)));
        }
    };
    std::fs::rename(&partial, path)
        .map_err(|e| ActionError::permanent(format!("cannot move {} to {}: {e}", partial.display(), path.display())))?;
    if let Some(dir) = path.parent() {
        if let Ok(dir) = std::fs::File::open(if dir.as_os_str().is_empty() { Path::new(".") } else { dir }) {
            let _ = dir.sync_all();
        }
    }
    info.path = path.to_path_buf();
    info.endpoint = Some(endpoint.to_owned());
    info.revision = revision;
    tracing::info!(endpoint, path = %path.display(), size = info.size, sha256 = %info.sha256, ?revision, "etcd snapshot saved and verified");
    Ok(info)
}

// ---------------------------------------------------------------------------
// Restore

/// The node's restore tool, from its `version` output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreTool {
    /// `etcdutl` or `etcdctl`.
    pub program: String,
    pub version: (u32, u32, u32),
}

impl RestoreTool {
    /// Parses `etcdutl version` / `etcdctl version` output.
    pub fn parse(output: &str) -> Option<RestoreTool> {
        for line in output.lines() {
            let line = line.trim();
            for program in ["etcdutl", "etcdctl"] {
                if let Some(rest) = line.strip_prefix(&format!("{program} version:")) {
                    let mut parts = rest.trim().trim_start_matches('v').split(|c: char| !c.is_ascii_digit());
                    let mut next = || parts.next().and_then(|p| p.parse::<u32>().ok());
                    let version = (next()?, next().unwrap_or(0), next().unwrap_or(0));
                    return Some(RestoreTool { program: program.to_owned(), version });
                }
            }
        }
        None
    }

    /// Whether `--bump-revision` and `--mark-compacted` are available (etcdutl 3.5.10+).
    pub fn bumps_revision(&self) -> bool {
        self.program == "etcdutl" && self.version >= (3, 5, 10)
    }

    /// The command prefix (`ETCDCTL_API=3 etcdctl` or `etcdutl`).
    fn command(&self) -> String {
        if self.program == "etcdctl" {
            "ETCDCTL_API=3 etcdctl".to_owned()
        } else {
            self.program.clone()
        }
    }
}

/// `etcd.snapshot-restore` parameters: the guide's restore, made safe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdSnapshotRestore {
    /// The control-plane node etcd runs on.
    pub ssh: SshTarget,
    /// The snapshot on the bastion (checked before it is uploaded).
    pub snapshot: PathBuf,
    pub name: String,
    pub initial_cluster: String,
    pub initial_cluster_token: String,
    pub initial_advertise_peer_urls: String,
    #[serde(default = "default_data_dir")]
    pub data_dir: String,
    /// Where the new data dir is built and the old one is kept (same filesystem as `data_dir`).
    #[serde(default = "default_staging_dir")]
    pub staging_dir: String,
    /// Where the snapshot is uploaded and the trial restore runs.
    #[serde(default = "default_remote_tmp")]
    pub remote_tmp: String,
    #[serde(default = "default_owner")]
    pub owner: String,
    #[serde(default = "default_service")]
    pub service: String,
    #[serde(default = "default_true")]
    pub sudo: bool,
    /// `--bump-revision` value with etcdutl 3.5.10+.
    #[serde(default = "default_bump")]
    pub bump_revision: u64,
}

/// The data directory kubeadm gives etcd (also `dr.toml`'s default).
pub(crate) fn default_data_dir() -> String {
    "/var/lib/etcd".to_owned()
}
/// Where restores build and keep data directories (also `dr.toml`'s default).
pub(crate) fn default_staging_dir() -> String {
    "/var/lib".to_owned()
}
fn default_remote_tmp() -> String {
    "/tmp".to_owned()
}
fn default_owner() -> String {
    "etcd:etcd".to_owned()
}
fn default_service() -> String {
    "etcd".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_bump() -> u64 {
    1_000_000_000
}

/// What a restore did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreReport {
    pub host: String,
    pub tool: RestoreTool,
    pub snapshot_sha256: String,
    pub remote_snapshot: String,
    /// The snapshot's revision as the node's tool reports it.
    pub revision: Option<i64>,
    pub total_keys: Option<i64>,
    pub data_dir: String,
    /// Where the data dir etcd had before the restore is kept (none when
    /// there was none).
    pub previous_data_dir: Option<String>,
    pub bumped_revision: bool,
}

struct Paths {
    id: String,
    remote_snapshot: String,
    trial: String,
    new: String,
    kept: String,
    marker: String,
}

/// The commands of the swap, in order (see [`EtcdSnapshotRestore::swap_steps`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwapPhase {
    Stop,
    Keep,
    Swap,
    Own,
    Start,
    Mark,
}

impl std::fmt::Display for SwapPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SwapPhase::Stop => "stop",
            SwapPhase::Keep => "keep",
            SwapPhase::Swap => "swap",
            SwapPhase::Own => "own",
            SwapPhase::Start => "start",
            SwapPhase::Mark => "mark",
        })
    }
}

/// One command of the swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwapStep {
    pub phase: SwapPhase,
    /// A shell command line for the node.
    pub command: String,
}

/// What the `keep` step prints: the kept directory's path follows it.
const KEPT: &str = "dr-kept=";

/// Prints the version of the node's restore tool (etcdutl, else etcdctl).
const TOOL_VERSION: &str = "if command -v etcdutl >/dev/null 2>&1; then etcdutl version; else etcdctl version; fi";

impl EtcdSnapshotRestore {
    pub fn new(
        ssh: SshTarget,
        snapshot: impl Into<PathBuf>,
        name: impl Into<String>,
        initial_cluster: impl Into<String>,
        initial_cluster_token: impl Into<String>,
        initial_advertise_peer_urls: impl Into<String>,
    ) -> Self {
        EtcdSnapshotRestore {
            ssh,
            snapshot: snapshot.into(),
            name: name.into(),
            initial_cluster: initial_cluster.into(),
            initial_cluster_token: initial_cluster_token.into(),
            initial_advertise_peer_urls: initial_advertise_peer_urls.into(),
            data_dir: default_data_dir(),
            staging_dir: default_staging_dir(),
            remote_tmp: default_remote_tmp(),
            owner: default_owner(),
            service: default_service(),
            sudo: true,
            bump_revision: default_bump(),
        }
    }

    /// The node paths of a restore of the snapshot with this SHA-256; the kept
    /// data dir is `STAGING/NAME.before-ID` (`/var/lib/etcd.before-ID` by
    /// default), ID the first 16 hex digits of the snapshot's SHA-256.
    fn paths(&self, sha256: &str) -> Result<Paths, ActionError> {
        let id: String = sha256.chars().take(16).collect();
        let data = self.data_dir.trim_end_matches('/');
        let staging = self.staging_dir.trim_end_matches('/');
        let tmp = self.remote_tmp.trim_end_matches('/');
        let refuse = |why: &str| {
            ActionError::permanent(format!(
                "etcd restore settings refused: {why} (data_dir {:?}, staging_dir {:?}, remote_tmp {:?})",
                self.data_dir, self.staging_dir, self.remote_tmp
            ))
        };
        let name = match data.rsplit_once('/') {
            Some((_, name)) if data.starts_with('/') && !name.is_empty() && name != "." && name != ".." => name,
            _ => return Err(refuse("data_dir must be an absolute path below /")),
        };
        let within = |dir: &str, parent: &str| dir == parent || dir.starts_with(&format!("{parent}/"));
        if within(staging, data) || within(tmp, data) {
            return Err(refuse("staging_dir and remote_tmp must lie outside data_dir"));
        }
        Ok(Paths {
            remote_snapshot: format!("{tmp}/dr-etcd-snapshot-{id}.db"),
            trial: format!("{tmp}/dr-etcd-trial-{id}"),
            new: format!("{staging}/{name}.restore-{id}"),
            kept: format!("{staging}/{name}.before-{id}"),
            marker: format!("{staging}/dr-etcd-restored-{id}"),
            id,
        })
    }

    /// The destructive part of a restore of the snapshot with this SHA-256,
    /// once the restored data dir is built: shell commands run in order, each
    /// safe to run again after a crash before, during or after it, so a rerun
    /// of the whole restore from any point ends with the snapshot's data live
    /// and every earlier data dir kept.
    ///
    /// - `stop`: stop etcd.
    /// - `keep`: if the data dir exists, rename it to the first free name of
    ///   `KEPT`, `KEPT.1`, `KEPT.2`, … (`KEPT` named by the snapshot's hash): a
    ///   second restore of the same snapshot, or a rerun after the swap, keeps
    ///   the data dir it finds beside the first one instead of replacing
    ///   either. Prints the kept path (the newest kept one when the data dir
    ///   was already moved by an interrupted attempt).
    /// - `swap`: rename the restored dir to the data dir; when it is gone
    ///   already (a rerun), the data dir must hold a member.
    /// - `own`, `start`, `mark` (the marker the probe looks for).
    ///
    /// Nothing is removed; `mv -T` never renames onto a non-empty directory,
    /// so a wrong existence check fails the step instead of losing data.
    pub fn swap_steps(&self, snapshot_sha256: &str) -> Result<Vec<SwapStep>, ActionError> {
        let paths = self.paths(snapshot_sha256)?;
        let s = self.sudo();
        let (data, kept, new) = (shell_quote(&self.data_dir), shell_quote(&paths.kept), shell_quote(&paths.new));
        let exists = |path: &str| self.exists(path);
        let step = |phase, command: String| SwapStep { phase, command };
        Ok(vec![
            step(SwapPhase::Stop, format!("{s}systemctl stop {}", shell_quote(&self.service))),
            step(
                SwapPhase::Keep,
                format!(
                    "{}; if {data_exists}; then {s}mv -T {data} \"$next\" && echo \"{KEPT}$next\"; \
                     elif [ -n \"$last\" ]; then echo \"{KEPT}$last\"; fi",
                    self.find_kept(&kept),
                    data_exists = exists(&data),
                ),
            ),
            step(
                SwapPhase::Swap,
                format!("if {}; then {s}mv -T {new} {data}; else {s}ls -d {data}/member; fi", exists(&new)),
            ),
            step(SwapPhase::Own, format!("{s}chown -R {} {data} && {s}chmod 700 {data}", shell_quote(&self.owner))),
            step(SwapPhase::Start, format!("{s}systemctl start {}", shell_quote(&self.service))),
            step(SwapPhase::Mark, format!("{s}touch {}", shell_quote(&paths.marker))),
        ])
    }

    /// A shell test: does `path` (quoted) exist on the node?
    fn exists(&self, path: &str) -> String {
        format!("{}ls -d {path} >/dev/null 2>&1", self.sudo())
    }

    /// Shell that sets `$last` to the newest kept data dir of `kept` (quoted),
    /// `KEPT`, `KEPT.1`, … (empty when none), and `$next` to the first free name.
    fn find_kept(&self, kept: &str) -> String {
        format!(
            "last=; next={kept}; i=0; while {}; do last=$next; i=$((i+1)); next={kept}.$i; done",
            self.exists("\"$next\"")
        )
    }

    fn sudo(&self) -> &'static str {
        if self.sudo {
            "sudo -n "
        } else {
            ""
        }
    }

    fn restore_command(&self, tool: &RestoreTool, snapshot: &str, data_dir: &str) -> String {
        let mut line = format!(
            "{}{} snapshot restore {} --data-dir {} --name {} --initial-cluster {} --initial-cluster-token {} \
             --initial-advertise-peer-urls {}",
            self.sudo(),
            tool.command(),
            shell_quote(snapshot),
            shell_quote(data_dir),
            shell_quote(&self.name),
            shell_quote(&self.initial_cluster),
            shell_quote(&self.initial_cluster_token),
            shell_quote(&self.initial_advertise_peer_urls),
        );
        if tool.bumps_revision() {
            line.push_str(&format!(" --bump-revision {} --mark-compacted", self.bump_revision));
        }
        line
    }

    /// The snapshot, checked (on the blocking pool).
    async fn checked_snapshot(&self, ctx: &ActionCtx) -> Result<SnapshotInfo, ActionError> {
        let local = self.snapshot.clone();
        super::blocking(ctx, "the snapshot check", move |_| verify_snapshot(&local)).await
    }

    async fn restore(&self, ctx: &ActionCtx) -> Result<RestoreReport, ActionError> {
        let host = self.ssh.address();
        let sh = |command: String| async move { ssh::run_checked(ctx, &self.ssh, &command, RunOptions::default()).await };
        let s = self.sudo();
        let q = |p: &str| shell_quote(p);

        // 1. The snapshot passes its own check before anything else.
        let checked = self.checked_snapshot(ctx).await?;
        let paths = self.paths(&checked.sha256)?;
        sh(format!("{s}rm -f {}", q(&paths.marker))).await?;

        // 2. Upload (checksummed).
        ssh::upload(ctx, &self.ssh, &self.snapshot, &paths.remote_snapshot, 0o600).await?;

        // 3. The node's tool.
        let version = sh(TOOL_VERSION.to_owned()).await?;
        let tool = RestoreTool::parse(&version.stdout.text).ok_or_else(|| {
            ActionError::permanent(format!(
                "cannot tell the etcd restore tool on {host} from `version`: {}; install etcdutl (3.5+) or etcdctl",
                version.stdout.text.trim()
            ))
        })?;
        tracing::info!(host = %host, tool = %tool.program, version = ?tool.version, "etcd restore tool");

        // 4. What the snapshot holds, as the node's tool reads it.
        let status = sh(format!("{s}{} snapshot status {} -w json", tool.command(), q(&paths.remote_snapshot))).await;
        let (revision, total_keys) = match &status {
            Ok(result) => {
                let json: serde_json::Value = serde_json::from_str(result.stdout.text.trim()).unwrap_or_default();
                (json["revision"].as_i64(), json["totalKey"].as_i64())
            }
            Err(_) => (None, None),
        };

        // 5. Trial restore into a temporary directory: nothing destructive before it succeeds.
        sh(format!("{s}rm -rf {}", q(&paths.trial))).await?;
        sh(self.restore_command(&tool, &paths.remote_snapshot, &paths.trial)).await.map_err(|e| {
            ActionError::permanent(format!(
                "trial restore of the snapshot on {host} failed, so etcd was left untouched: {}; \
                 the snapshot is not restorable, use another backup",
                e.message
            ))
        })?;
        sh(format!("{s}ls {}/member/snap/db", q(&paths.trial))).await.map_err(|e| {
            ActionError::permanent(format!("trial restore on {host} produced no database, etcd left untouched: {}", e.message))
        })?;
        sh(format!("{s}rm -rf {}", q(&paths.trial))).await?;

        // 6. The real restore into a new data directory.
        sh(format!("{s}rm -rf {}", q(&paths.new))).await?;
        sh(self.restore_command(&tool, &paths.remote_snapshot, &paths.new)).await?;

        // 7. Stop etcd, keep the data dir under a name of its own, swap the
        // restored one in, ownership, mode, start, marker: renames only, each
        // command safe to rerun (see `swap_steps`).
        let mut previous_data_dir = None;
        for step in self.swap_steps(&checked.sha256)? {
            let result = sh(step.command).await.map_err(|e| {
                let kept = previous_data_dir.clone().unwrap_or_else(|| format!("{}*", paths.kept));
                ActionError::retryable(match step.phase {
                    SwapPhase::Stop => format!(
                        "could not stop etcd on {host} ({}); this attempt moved no data dir; check \
                         `systemctl status {}` and retry the step",
                        e.message, self.service
                    ),
                    SwapPhase::Keep | SwapPhase::Swap => format!(
                        "swapping etcd data directories on {host} failed at `{}` ({}); etcd is STOPPED; nothing was \
                         removed: the data dir before the restore is {} or kept in {kept}; retry the step, it is safe \
                         to rerun",
                        step.phase, e.message, self.data_dir
                    ),
                    SwapPhase::Start => format!(
                        "etcd did not start on {host} after the restore: {}; check `journalctl -u {}`; the previous \
                         data dir is kept in {kept}",
                        e.message, self.service
                    ),
                    SwapPhase::Own | SwapPhase::Mark => format!(
                        "etcd restore on {host} failed at `{}` ({}); the previous data dir is kept in {kept}; retry \
                         the step, it is safe to rerun",
                        step.phase, e.message
                    ),
                })
            })?;
            if step.phase == SwapPhase::Keep {
                let kept = result.stdout.text.lines().find_map(|line| line.trim().strip_prefix(KEPT));
                previous_data_dir = kept.map(str::to_owned);
            }
        }
        tracing::info!(host = %host, snapshot = %paths.id, ?revision, "etcd restored from snapshot");
        Ok(RestoreReport {
            host,
            bumped_revision: tool.bumps_revision(),
            tool,
            snapshot_sha256: checked.sha256,
            remote_snapshot: paths.remote_snapshot,
            revision,
            total_keys,
            data_dir: self.data_dir.clone(),
            previous_data_dir,
        })
    }
}

impl TypedAction for EtcdSnapshotRestore {
    const KIND: &'static str = "etcd.snapshot-restore";
    type Params = Self;
    type Output = RestoreReport;

    fn params(&self) -> &Self {
        self
    }

    fn summary(&self, report: &RestoreReport) -> String {
        format!(
            "etcd on {} restored from snapshot {} (revision {}, {} with {}); {}",
            report.host,
            &report.snapshot_sha256[..16.min(report.snapshot_sha256.len())],
            report.revision.map_or_else(|| "unknown".to_owned(), |r| r.to_string()),
            report.tool.program,
            if report.bumped_revision { "revision bumped" } else { "revision kept" },
            report.previous_data_dir.as_deref().map_or_else(
                || "there was no previous data dir".to_owned(),
                |dir| format!("previous data in {dir}")
            )
        )
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<RestoreReport, ActionError> {
        ctx.guard("etcd snapshot restore", self.restore(ctx)).await
    }

    /// Done when this snapshot's restore completed (its marker beside the
    /// data dir, written after etcd started on the restored data) and etcd
    /// runs. The output has what the node shows: its restore tool and the
    /// newest data dir kept by a restore of this snapshot; the snapshot's
    /// revision is not read again.
    async fn probe(&self, ctx: &ActionCtx) -> Result<Option<RestoreReport>, ActionError> {
        let checked = self.checked_snapshot(ctx).await?;
        let paths = self.paths(&checked.sha256)?;
        let s = self.sudo();
        let command = format!(
            "{s}ls {} >/dev/null && {s}ls -d {}/member >/dev/null && {s}systemctl is-active {} >/dev/null && \
             {{ {TOOL_VERSION}; {}; [ -z \"$last\" ] || echo \"{KEPT}$last\"; }}",
            shell_quote(&paths.marker),
            shell_quote(&self.data_dir),
            shell_quote(&self.service),
            self.find_kept(&shell_quote(&paths.kept)),
        );
        let result = ssh::run_command(ctx, &self.ssh, &command, RunOptions::default()).await?;
        if result.exit_status != 0 {
            return Ok(None);
        }
        let tool = RestoreTool::parse(&result.stdout.text)
            .unwrap_or_else(|| RestoreTool { program: "unknown".to_owned(), version: (0, 0, 0) });
        let kept = result.stdout.text.lines().find_map(|line| line.trim().strip_prefix(KEPT)).map(str::to_owned);
        Ok(Some(RestoreReport {
            host: self.ssh.address(),
            bumped_revision: tool.bumps_revision(),
            tool,
            snapshot_sha256: checked.sha256,
            remote_snapshot: paths.remote_snapshot,
            revision: None,
            total_keys: None,
            data_dir: self.data_dir.clone(),
            previous_data_dir: kept,
        }))
    }
}

/// `etcd.member-list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdMemberList {
    pub etcd: EtcdConnection,
}

/// The members, and the endpoint that listed them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberList {
    pub endpoint: String,
    pub members: Vec<MemberInfo>,
}

impl TypedAction for EtcdMemberList {
    const KIND: &'static str = "etcd.member-list";
    type Params = Self;
    type Output = MemberList;

    fn params(&self) -> &Self {
        self
    }

    fn summary(&self, list: &MemberList) -> String {
        let names: Vec<&str> = list.members.iter().map(|m| m.name.as_str()).collect();
        format!("{} etcd members (from {}): {}", list.members.len(), list.endpoint, names.join(", "))
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<MemberList, ActionError> {
        let (endpoint, members) = ctx.guard("etcd member list", member_list(&self.etcd)).await?;
        Ok(MemberList { endpoint, members })
    }
}

/// `etcd.endpoint-health`: status and health of every endpoint; fails
/// (retryably) unless every endpoint is healthy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdEndpointHealth {
    pub etcd: EtcdConnection,
}

/// Status of every endpoint.
pub async fn endpoint_health(etcd: &EtcdConnection) -> Vec<EndpointStatus> {
    let mut statuses = Vec::new();
    for endpoint in &etcd.endpoints {
        statuses.push(endpoint_status(etcd, endpoint).await);
    }
    statuses
}

impl TypedAction for EtcdEndpointHealth {
    const KIND: &'static str = "etcd.endpoint-health";
    type Params = Self;
    type Output = Vec<EndpointStatus>;

    fn params(&self) -> &Self {
        self
    }

    fn summary(&self, statuses: &Vec<EndpointStatus>) -> String {
        format!("{} etcd endpoints healthy", statuses.len())
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<Vec<EndpointStatus>, ActionError> {
        let statuses = ctx.guard("etcd endpoint health", async { Ok(endpoint_health(&self.etcd).await) }).await?;
        if statuses.is_empty() {
            return Err(ActionError::retryable("no etcd endpoints configured (etcd.endpoints)"));
        }
        let unhealthy: Vec<String> = statuses
            .iter()
            .filter(|s| !s.healthy)
            .map(|s| format!("{} is unhealthy: {}", s.endpoint, s.error.as_deref().unwrap_or("no answer")))
            .collect();
        if !unhealthy.is_empty() {
            return Err(ActionError::retryable(unhealthy.join("; ")));
        }
        Ok(statuses)
    }
}

/// `etcd.alarm-list`: fails (permanently: an operator must act, e.g. defrag
/// and `alarm disarm` for NOSPACE) when an alarm is active.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdAlarmList {
    pub etcd: EtcdConnection,
}

impl TypedAction for EtcdAlarmList {
    const KIND: &'static str = "etcd.alarm-list";
    type Params = Self;
    /// Empty: an active alarm fails the step.
    type Output = Vec<AlarmInfo>;

    fn params(&self) -> &Self {
        self
    }

    fn summary(&self, _alarms: &Vec<AlarmInfo>) -> String {
        "no etcd alarms".to_owned()
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<Vec<AlarmInfo>, ActionError> {
        let alarms = ctx.guard("etcd alarm list", alarm_list(&self.etcd)).await?;
        if !alarms.is_empty() {
            let list: Vec<String> = alarms.iter().map(|a| format!("{} on member {}", a.alarm, a.member_id)).collect();
            return Err(ActionError::permanent(format!(
                "etcd has active alarms: {}; resolve them (e.g. compact, defrag, `etcdctl alarm disarm`)",
                list.join(", ")
            )));
        }
        Ok(alarms)
    }
}

/// `etcd.snapshot-save`: a verified snapshot on the bastion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdSnapshotSave {
    pub etcd: EtcdConnection,
    pub path: PathBuf,
}

impl TypedAction for EtcdSnapshotSave {
    const KIND: &'static str = "etcd.snapshot-save";
    type Params = Self;
    type Output = SnapshotInfo;

    fn params(&self) -> &Self {
        self
    }

    fn summary(&self, info: &SnapshotInfo) -> String {
        format!(
            "etcd snapshot {} from {}: {} bytes, revision {}, sha256 {} (hash check passed)",
            info.path.display(),
            info.endpoint.as_deref().unwrap_or("?"),
            info.size,
            info.revision.map_or_else(|| "unknown".to_owned(), |r| r.to_string()),
            info.sha256
        )
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<SnapshotInfo, ActionError> {
        snapshot_save(&self.etcd, &self.path, ctx).await
    }

    /// Done when the file exists and passes its check; the output is that
    /// check's (where it came from and its revision are not in the file).
    async fn probe(&self, ctx: &ActionCtx) -> Result<Option<SnapshotInfo>, ActionError> {
        let path = self.path.clone();
        super::blocking(ctx, "the snapshot check", move |_| Ok(path.exists().then(|| verify_snapshot(&path).ok()).flatten()))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_tool_from_version_output() {
        let t = RestoreTool::parse("etcdctl version: 3.4.23\nAPI version: 3.4\n").unwrap();
        assert_eq!((t.program.as_str(), t.version), ("etcdctl", (3, 4, 23)));
        assert!(!t.bumps_revision());
        let t = RestoreTool::parse("etcdutl version: 3.5.12\nAPI version: 3.5\n").unwrap();
        assert!(t.bumps_revision());
        let t = RestoreTool::parse("etcdutl version: 3.5.9\n").unwrap();
        assert!(!t.bumps_revision());
        assert!(RestoreTool::parse("bash: etcdctl: command not found").is_none());
    }

    #[test]
    fn a_snapshot_is_checked_by_its_appended_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let body = vec![7u8; 4096];
        let mut data = body.clone();
        data.extend_from_slice(&Sha256::digest(&body));
        std::fs::write(&path, &data).unwrap();
        let info = verify_snapshot(&path).unwrap();
        assert_eq!(info.size, 4096 + 32);
        assert_eq!(info.sha256, hex(&Sha256::digest(&data)));
        std::fs::write(&path, &data[..data.len() - 100]).unwrap();
        let err = verify_snapshot(&path).unwrap_err();
        assert!(!err.retryable && err.message.contains("fails its check"), "{}", err.message);
    }

    #[test]
    fn the_swap_only_renames_and_keeps_the_data_dir_under_the_snapshots_hash() {
        let target = SshTarget::new("h", 22, "root", "/kh");
        let peer = "https://10.0.0.1:2380";
        let r = EtcdSnapshotRestore::new(target, "/s.db", "cp-1", format!("cp-1={peer}"), "tok", peer);
        let sha = "0123456789abcdef".repeat(4);
        let steps = r.swap_steps(&sha).unwrap();
        let phases: Vec<SwapPhase> = steps.iter().map(|s| s.phase).collect();
        use SwapPhase::*;
        assert_eq!(phases, [Stop, Keep, Swap, Own, Start, Mark]);
        for step in &steps {
            assert!(!step.command.contains("rm "), "{}", step.command);
        }
        let keep = &steps[1].command;
        assert!(keep.contains("next=/var/lib/etcd.before-0123456789abcdef;"), "{keep}");
        assert!(keep.contains("mv -T /var/lib/etcd \"$next\""), "{keep}");
        let swap = &steps[2].command;
        assert!(swap.contains("mv -T /var/lib/etcd.restore-0123456789abcdef /var/lib/etcd;"), "{swap}");

        let refused = [
            ("/var/lib/etcd", "/var/lib/etcd/staging"),
            ("/var/lib/etcd/", "/var/lib/etcd"),
            ("/", "/var/lib"),
            ("etcd", "/var/lib"),
        ];
        for (data_dir, staging_dir) in refused {
            let r = EtcdSnapshotRestore { data_dir: data_dir.into(), staging_dir: staging_dir.into(), ..r.clone() };
            let err = r.swap_steps(&sha).unwrap_err();
            assert!(!err.retryable && err.message.contains("settings refused"), "{}", err.message);
        }
    }

    #[test]
    fn restore_command_has_the_cluster_flags() {
        let target = SshTarget::new("h", 22, "root", "/kh");
        let r = EtcdSnapshotRestore::new(target, "/s.db", "cp-1", "cp-1=https://10.0.0.1:2380", "tok", "https://10.0.0.1:2380");
        let tool = RestoreTool { program: "etcdutl".into(), version: (3, 5, 12) };
        let line = r.restore_command(&tool, "/tmp/s.db", "/var/lib/etcd-new");
        assert!(line.starts_with("sudo -n etcdutl snapshot restore /tmp/s.db --data-dir /var/lib/etcd-new --name cp-1"), "{line}");
        assert!(line.contains("--initial-cluster-token tok") && line.contains("--bump-revision 1000000000 --mark-compacted"), "{line}");
        let tool = RestoreTool { program: "etcdctl".into(), version: (3, 4, 23) };
        let line = r.restore_command(&tool, "/tmp/s.db", "/d");
        assert!(line.contains("ETCDCTL_API=3 etcdctl snapshot restore") && !line.contains("bump"), "{line}");
    }
}
