//! The backup actions, over the guide's `/backup` directory of
//! `backup-YYYYmmdd-HHMMSS.tar.gz` archives with `.sha256` sidecars:
//!
//! - `backup.check` ([`BackupCheckAction`]): the backups matching a
//!   glob-like pattern (default `*.tar.gz`), newest first by modification
//!   time; the newest one's age (by the injected clock) against the RPO
//!   (default 24 h) as a
//!   [`BackupCheckOutput`] `{newest, age_secs, rpo_secs, within_rpo, count}`;
//!   its sidecar verified when present. An exceeded RPO fails the step or
//!   only warns, per `fail_if_exceeded`.
//! - `backup.extract` ([`BackupExtractAction`]): the newest (or a named)
//!   backup, sidecar verified, unpacked into a work directory (flate2 + tar);
//!   members with absolute paths, `..` or links are refused; the etcd
//!   snapshot (`etcd-snapshot.db`) must be there and look like a bbolt file.
//!
//! Both read and write files on the blocking pool ([`super::blocking`]),
//! stopping between files and chunks when the attempt is cancelled or its
//! deadline passes. Reading changes nothing, so the check has no probe.
//!
//! Owns: reading the backup directory and writing into the work directory.
//! Refuses: deleting or rotating backups.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use dr_orchestrator::{ActionCtx, ActionError, TypedAction};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

pub const CHECK_KIND: &str = "backup.check";
pub const EXTRACT_KIND: &str = "backup.extract";

/// The default pattern of backup file names.
pub const DEFAULT_PATTERN: &str = "*.tar.gz";
/// The guide's RPO: 24 h.
pub const DEFAULT_RPO_SECS: u64 = 24 * 3600;
/// The etcd snapshot inside a backup.
pub const ETCD_SNAPSHOT: &str = "etcd-snapshot.db";

fn default_pattern() -> String {
    DEFAULT_PATTERN.to_owned()
}
fn default_rpo_secs() -> u64 {
    DEFAULT_RPO_SECS
}
fn yes() -> bool {
    true
}
fn default_required() -> Vec<String> {
    vec![ETCD_SNAPSHOT.to_owned()]
}

/// One backup file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupFile {
    pub path: PathBuf,
    pub size: u64,
    pub age_secs: u64,
}

/// Whether a backup's `.sha256` sidecar was checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum Checksum {
    /// The sidecar matched; the file's SHA-256.
    Verified { sha256: String },
    /// There is no sidecar.
    NoSidecar,
    /// Not asked to verify.
    Skipped,
}

impl std::fmt::Display for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Checksum::Verified { .. } => f.write_str("verified"),
            Checksum::NoSidecar => f.write_str("not verified (no .sha256 sidecar)"),
            Checksum::Skipped => f.write_str("not verified (skipped)"),
        }
    }
}

/// The backups matching `pattern` in `dir`, newest first (by mtime), their
/// ages as of `now`.
pub fn find_backups(dir: &Path, pattern: &str, now: SystemTime) -> Result<Vec<BackupFile>, ActionError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        ActionError::permanent(format!(
            "cannot read the backup directory {}: {e}; check [backup] dir in the configuration",
            dir.display()
        ))
    })?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ActionError::retryable(format!("cannot list {}: {e}", dir.display())))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !glob_match(pattern, name) {
            continue;
        }
        let meta = match entry.metadata() {
            Ok(meta) if meta.is_file() => meta,
            _ => continue,
        };
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let age_secs = now.duration_since(modified).unwrap_or(Duration::ZERO).as_secs();
        found.push((modified, BackupFile { path: entry.path(), size: meta.len(), age_secs }));
    }
    found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.path.cmp(&a.1.path)));
    Ok(found.into_iter().map(|(_, b)| b).collect())
}

/// Now by the attempt's clock, to compare with modification times.
pub fn now(ctx: &ActionCtx) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ctx.clock.now_ms()).unwrap_or(0))
}

/// Matches a file name against a glob-like pattern: `*` any run, `?` one character.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((star_p, star_n)) = star {
            pi = star_p + 1;
            ni = star_n + 1;
            star = Some((star_p, star_n + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The SHA-256 of a file, hex.
pub fn sha256_file(path: &Path, cancel: &CancellationToken) -> Result<String, ActionError> {
    let file = File::open(path).map_err(|e| ActionError::retryable(format!("cannot read {}: {e}", path.display())))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        if cancel.is_cancelled() {
            return Err(ActionError::retryable(format!("cancelled while hashing {}", path.display())));
        }
        let n = reader
            .read(&mut buffer)
            .map_err(|e| ActionError::retryable(format!("cannot read {}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks `FILE.sha256` (sha256sum format: `HEX  NAME`) when it exists.
pub fn verify_sidecar(path: &Path, cancel: &CancellationToken) -> Result<Checksum, ActionError> {
    let mut sidecar = path.as_os_str().to_owned();
    sidecar.push(".sha256");
    let sidecar = PathBuf::from(sidecar);
    let text = match std::fs::read_to_string(&sidecar) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Checksum::NoSidecar),
        Err(e) => return Err(ActionError::retryable(format!("cannot read {}: {e}", sidecar.display()))),
    };
    let expected = text.split_whitespace().next().unwrap_or("").to_ascii_lowercase();
    if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ActionError::permanent(format!(
            "{} is not a sha256sum line (`HEX  NAME`); fix or remove it",
            sidecar.display()
        )));
    }
    let actual = sha256_file(path, cancel)?;
    if actual != expected {
        return Err(ActionError::permanent(format!(
            "backup {} fails its checksum: {} says {expected}, the file hashes to {actual}; the backup is damaged, use an older one",
            path.display(),
            sidecar.display()
        )));
    }
    Ok(Checksum::Verified { sha256: actual })
}

fn hours(secs: u64) -> String {
    format!("{:.1} h", secs as f64 / 3600.0)
}

// ---------------------------------------------------------------- check

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupCheckParams {
    pub dir: PathBuf,
    #[serde(default = "default_pattern")]
    pub pattern: String,
    #[serde(default = "default_rpo_secs")]
    pub rpo_secs: u64,
    /// An exceeded RPO fails the step (else it is reported and logged as a warning).
    #[serde(default = "yes")]
    pub fail_if_exceeded: bool,
    /// Verify the newest backup's `.sha256` sidecar when present.
    #[serde(default = "yes")]
    pub verify_checksum: bool,
}

impl BackupCheckParams {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        BackupCheckParams {
            dir: dir.into(),
            pattern: default_pattern(),
            rpo_secs: DEFAULT_RPO_SECS,
            fail_if_exceeded: true,
            verify_checksum: true,
        }
    }
}

/// What `backup.check` found: the step's output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupCheckOutput {
    pub newest: PathBuf,
    pub age_secs: u64,
    pub rpo_secs: u64,
    pub within_rpo: bool,
    pub count: usize,
    pub checksum: Checksum,
    /// The backups, newest first (at most 20).
    pub backups: Vec<BackupFile>,
}

#[derive(Clone, Debug)]
pub struct BackupCheckAction {
    pub params: BackupCheckParams,
}

impl BackupCheckAction {
    pub fn new(params: BackupCheckParams) -> Self {
        BackupCheckAction { params }
    }
}

impl TypedAction for BackupCheckAction {
    const KIND: &'static str = CHECK_KIND;
    type Params = BackupCheckParams;
    type Output = BackupCheckOutput;

    fn params(&self) -> &BackupCheckParams {
        &self.params
    }

    fn summary(&self, output: &BackupCheckOutput) -> String {
        format!(
            "newest of {} backups {} is {} old ({} the {} RPO), checksum {}",
            output.count,
            output.newest.display(),
            hours(output.age_secs),
            if output.within_rpo { "within" } else { "OVER" },
            hours(output.rpo_secs),
            output.checksum
        )
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<BackupCheckOutput, ActionError> {
        let (params, now) = (self.params.clone(), now(ctx));
        super::blocking(ctx, "the backup check", move |cancel| check(&params, now, cancel)).await
    }
}

fn check(params: &BackupCheckParams, now: SystemTime, cancel: &CancellationToken) -> Result<BackupCheckOutput, ActionError> {
    let backups = find_backups(&params.dir, &params.pattern, now)?;
    let Some(newest) = backups.first().cloned() else {
        return Err(ActionError::permanent(format!(
            "no backup matching {} in {}; check that the backup job runs and writes there",
            params.pattern,
            params.dir.display()
        )));
    };
    let checksum = if params.verify_checksum { verify_sidecar(&newest.path, cancel)? } else { Checksum::Skipped };
    let within_rpo = newest.age_secs <= params.rpo_secs;
    if !within_rpo {
        let message = format!(
            "RPO exceeded: the newest backup {} is {} old, the RPO is {}; data since then would be lost — run a backup now if the cluster still answers",
            newest.path.display(),
            hours(newest.age_secs),
            hours(params.rpo_secs)
        );
        if params.fail_if_exceeded {
            return Err(ActionError::permanent(message));
        }
        tracing::warn!("{message}");
    }
    tracing::info!(count = backups.len(), age_secs = newest.age_secs, within_rpo, "newest backup {}", newest.path.display());
    Ok(BackupCheckOutput {
        newest: newest.path,
        age_secs: newest.age_secs,
        rpo_secs: params.rpo_secs,
        within_rpo,
        count: backups.len(),
        checksum,
        backups: backups.into_iter().take(20).collect(),
    })
}

// ---------------------------------------------------------------- extract

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupExtractParams {
    /// Where the backups are (used when `backup` is not given).
    pub dir: PathBuf,
    #[serde(default = "default_pattern")]
    pub pattern: String,
    /// A specific backup file; default: the newest matching `pattern` in `dir`.
    #[serde(default)]
    pub backup: Option<PathBuf>,
    /// Created if missing; members are written below it.
    pub work_dir: PathBuf,
    #[serde(default = "yes")]
    pub verify_checksum: bool,
    /// Members that must be in the archive (default: `etcd-snapshot.db`).
    #[serde(default = "default_required")]
    pub require: Vec<String>,
}

impl BackupExtractParams {
    pub fn new(dir: impl Into<PathBuf>, work_dir: impl Into<PathBuf>) -> Self {
        BackupExtractParams {
            dir: dir.into(),
            pattern: default_pattern(),
            backup: None,
            work_dir: work_dir.into(),
            verify_checksum: true,
            require: default_required(),
        }
    }
}

/// What `backup.extract` wrote: the step's output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupExtractOutput {
    pub backup: PathBuf,
    pub work_dir: PathBuf,
    /// Member paths as written, relative to `work_dir`.
    pub members: Vec<String>,
    /// `work_dir/etcd-snapshot.db` when the archive has it.
    pub etcd_snapshot: Option<PathBuf>,
    pub checksum: Checksum,
    pub bytes: u64,
}

#[derive(Clone, Debug)]
pub struct BackupExtractAction {
    pub params: BackupExtractParams,
}

impl BackupExtractAction {
    pub fn new(params: BackupExtractParams) -> Self {
        BackupExtractAction { params }
    }
}

impl TypedAction for BackupExtractAction {
    const KIND: &'static str = EXTRACT_KIND;
    type Params = BackupExtractParams;
    type Output = BackupExtractOutput;

    fn params(&self) -> &BackupExtractParams {
        &self.params
    }

    fn summary(&self, output: &BackupExtractOutput) -> String {
        format!(
            "extracted {} ({} members, {} bytes, checksum {}) into {}",
            output.backup.display(),
            output.members.len(),
            output.bytes,
            output.checksum,
            output.work_dir.display()
        )
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<BackupExtractOutput, ActionError> {
        let (params, now) = (self.params.clone(), now(ctx));
        super::blocking(ctx, "the backup extraction", move |cancel| extract(&params, now, cancel)).await
    }
}

pub fn extract(params: &BackupExtractParams, now: SystemTime, cancel: &CancellationToken) -> Result<BackupExtractOutput, ActionError> {
    let backup = match &params.backup {
        Some(path) => path.clone(),
        None => match find_backups(&params.dir, &params.pattern, now)?.into_iter().next() {
            Some(newest) => newest.path,
            None => {
                return Err(ActionError::permanent(format!(
                    "no backup matching {} in {} to restore from",
                    params.pattern,
                    params.dir.display()
                )))
            }
        },
    };
    let checksum = if params.verify_checksum { verify_sidecar(&backup, cancel)? } else { Checksum::Skipped };
    std::fs::create_dir_all(&params.work_dir).map_err(|e| {
        ActionError::permanent(format!("cannot create the work directory {}: {e}", params.work_dir.display()))
    })?;
    let file = File::open(&backup)
        .map_err(|e| ActionError::permanent(format!("cannot open backup {}: {e}", backup.display())))?;
    let damaged = |e: std::io::Error| {
        ActionError::permanent(format!(
            "backup {} is not a readable .tar.gz: {e}; the backup is damaged, use an older one",
            backup.display()
        ))
    };
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)));
    let mut members = Vec::new();
    let mut bytes = 0u64;
    for entry in archive.entries().map_err(damaged)? {
        if cancel.is_cancelled() {
            return Err(ActionError::retryable(format!("cancelled while extracting {}", backup.display())));
        }
        let mut entry = entry.map_err(damaged)?;
        let raw = entry.path().map_err(damaged)?.into_owned();
        let relative = safe_member_path(&raw).ok_or_else(|| {
            ActionError::permanent(format!(
                "backup {} has member {} with an absolute path or `..`; refusing to extract it",
                backup.display(),
                raw.display()
            ))
        })?;
        let kind = entry.header().entry_type();
        if relative.as_os_str().is_empty() {
            continue;
        }
        let dest = params.work_dir.join(&relative);
        if kind.is_dir() {
            std::fs::create_dir_all(&dest)
                .map_err(|e| ActionError::permanent(format!("cannot create {}: {e}", dest.display())))?;
            continue;
        }
        if !kind.is_file() {
            return Err(ActionError::permanent(format!(
                "backup {} has member {} of type {kind:?} (links and devices are refused)",
                backup.display(),
                raw.display()
            )));
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| ActionError::permanent(format!("cannot create {}: {e}", parent.display())))?;
        }
        entry.unpack(&dest).map_err(|e| {
            ActionError::permanent(format!("cannot extract {} from {} to {}: {e}", raw.display(), backup.display(), dest.display()))
        })?;
        bytes = bytes.saturating_add(entry.header().size().unwrap_or(0));
        members.push(relative.to_string_lossy().into_owned());
    }
    for required in &params.require {
        if !members.iter().any(|m| m == required) {
            return Err(ActionError::permanent(format!(
                "backup {} has no {required} (members: {}); it cannot be restored from, use another backup",
                backup.display(),
                members.join(", ")
            )));
        }
    }
    let etcd_snapshot = members.iter().any(|m| m == ETCD_SNAPSHOT).then(|| params.work_dir.join(ETCD_SNAPSHOT));
    if let Some(snapshot) = &etcd_snapshot {
        check_bbolt(snapshot, &backup)?;
    }
    tracing::info!(members = members.len(), bytes, "extracted {} into {}", backup.display(), params.work_dir.display());
    Ok(BackupExtractOutput { backup, work_dir: params.work_dir.clone(), members, etcd_snapshot, checksum, bytes })
}

/// The member path made relative and checked: `None` for absolute paths or `..`.
fn safe_member_path(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// An etcd snapshot is a bbolt database: its first meta page carries the
/// magic 0xED0CDAED (little-endian) after the 16-byte page header.
fn check_bbolt(snapshot: &Path, backup: &Path) -> Result<(), ActionError> {
    let mut head = [0u8; 20];
    let ok = File::open(snapshot).and_then(|mut f| f.read_exact(&mut head)).is_ok()
        && u32::from_le_bytes([head[16], head[17], head[18], head[19]]) == 0xED0C_DAED;
    if ok {
        Ok(())
    } else {
        Err(ActionError::permanent(format!(
            "{ETCD_SNAPSHOT} from backup {} is not an etcd (bbolt) snapshot; use another backup",
            backup.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_patterns_match_like_a_shell() {
        let check = |p: &str, n: &str, expect: bool| assert_eq!(glob_match(p, n), expect, "{p} vs {n}");
        check("*.tar.gz", "backup-20261128-010203.tar.gz", true);
        check("*.tar.gz", "backup.tar.gz.sha256", false);
        check("backup-????????-*.tar.gz", "backup-20261128-010203.tar.gz", true);
        check("backup-*", "other", false);
        check("*", "", true);
        check("a*b*c", "axxbyyc", true);
        check("a*b*c", "axxbyy", false);
    }

    #[test]
    fn member_paths_must_stay_inside() {
        assert_eq!(safe_member_path(Path::new("./etcd-snapshot.db")), Some(PathBuf::from("etcd-snapshot.db")));
        assert_eq!(safe_member_path(Path::new("a/b")), Some(PathBuf::from("a/b")));
        assert_eq!(safe_member_path(Path::new("../x")), None);
        assert_eq!(safe_member_path(Path::new("a/../../x")), None);
        assert_eq!(safe_member_path(Path::new("/etc/passwd")), None);
    }
}
