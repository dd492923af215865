//! Choosing the etcd snapshot a recovery restores, and proving it before
//! anything is destroyed: `etcd.choose-snapshot` (the live snapshot an
//! earlier step took when etcd answered, else the newest backup, extracted),
//! checked against the SHA-256 etcd appends and kept under a name derived from
//! its hash, with its age against the RPO — all recorded as step data, so the
//! gate shows it and every later step (and a rerun after a crash) uses exactly
//! that file; `etcd.trial-restore` (the snapshot restored on the bastion into a
//! scratch directory with `etcdutl`/`etcdctl`, its revision and key count
//! read); `etcd.restore-chosen` (the node-side restore of `etcd.snapshot-restore`
//! applied to the chosen snapshot).
//!
//! Refuses: choosing by file name alone (the hash decides what is restored),
//! and a trial that does not produce a database.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use dr_orchestrator::{ActionCtx, ActionError, StepHandle, StepId, TypedAction};
use serde::{Deserialize, Serialize};

use super::backup::{extract, find_backups, now, BackupExtractParams};
use super::command::{run_owned, CommandParams, EnvVar};
use super::etcd::{verify_snapshot, EtcdSnapshotRestore, RestoreReport, SnapshotInfo};

/// Where the snapshot came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotSource {
    Live,
    Backup,
}

/// The snapshot a recovery restores: the step data every later step reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChosenSnapshot {
    /// The checked copy, named by its hash: `WORK/snapshot-<sha256 prefix>.db`.
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
    pub source: SnapshotSource,
    /// The backup archive it was extracted from.
    pub backup: Option<PathBuf>,
    /// The backup's (or live snapshot's) file name, for people.
    pub name: String,
    /// How old the data is: the backup's age (0 for a live snapshot).
    pub age_secs: u64,
    /// The same, as people read it (`2h05m`).
    pub age: String,
    pub rpo_secs: u64,
    pub within_rpo: bool,
    /// The revision etcd reported when a live snapshot was taken.
    pub revision: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChooseSnapshotParams {
    /// Where the backups are, and which files are backups.
    pub backup_dir: PathBuf,
    pub pattern: String,
    pub rpo_secs: u64,
    /// Where the chosen snapshot is kept (and backups extracted).
    pub work_dir: PathBuf,
    /// The step that took a live snapshot, when there is one.
    pub live_from: Option<StepId>,
}

/// `etcd.choose-snapshot`.
#[derive(Clone, Debug)]
pub struct ChooseSnapshot {
    params: ChooseSnapshotParams,
    live: Option<StepHandle<SnapshotInfo>>,
}

impl ChooseSnapshot {
    /// The newest backup matching `pattern` in `backup_dir`, or — when the
    /// step `live` (an `etcd.snapshot-save`) succeeded — its snapshot.
    pub fn new(backup_dir: &Path, pattern: &str, rpo_secs: u64, work_dir: &Path, live: Option<&StepHandle<SnapshotInfo>>) -> Self {
        ChooseSnapshot {
            params: ChooseSnapshotParams {
                backup_dir: backup_dir.to_owned(),
                pattern: pattern.to_owned(),
                rpo_secs,
                work_dir: work_dir.to_owned(),
                live_from: live.map(|h| h.id().clone()),
            },
            live: live.cloned(),
        }
    }
}

/// `2h05m`, `3d04h`: an age as people read it.
pub fn human_age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn choose_blocking(
    params: &ChooseSnapshotParams,
    live: Option<SnapshotInfo>,
    now: SystemTime,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<ChosenSnapshot, ActionError> {
    std::fs::create_dir_all(&params.work_dir)
        .map_err(|e| ActionError::permanent(format!("cannot create the work directory {}: {e}", params.work_dir.display())))?;
    let (source, file, backup, age_secs, revision) = match live {
        Some(info) => (SnapshotSource::Live, info.path.clone(), None, 0, info.revision),
        None => {
            let newest = find_backups(&params.backup_dir, &params.pattern, now)?.into_iter().next().ok_or_else(|| {
                ActionError::permanent(format!(
                    "no backup matching {} in {}, and no live snapshot: nothing to restore from",
                    params.pattern,
                    params.backup_dir.display()
                ))
            })?;
            let name = newest.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let mut extract_params = BackupExtractParams::new(&params.backup_dir, params.work_dir.join(format!("extracted-{name}")));
            extract_params.pattern = params.pattern.clone();
            extract_params.backup = Some(newest.path.clone());
            let extracted = extract(&extract_params, now, cancel)?;
            let snapshot = extracted.etcd_snapshot.ok_or_else(|| {
                ActionError::permanent(format!("backup {} holds no etcd-snapshot.db", newest.path.display()))
            })?;
            (SnapshotSource::Backup, snapshot, Some(newest.path), newest.age_secs, None)
        }
    };
    let checked = verify_snapshot(&file)?;
    let id: String = checked.sha256.chars().take(16).collect();
    let kept = params.work_dir.join(format!("snapshot-{id}.db"));
    if kept != file {
        let temp = kept.with_extension("partial");
        std::fs::copy(&file, &temp).map_err(|e| ActionError::retryable(format!("cannot copy {} to {}: {e}", file.display(), temp.display())))?;
        std::fs::rename(&temp, &kept).map_err(|e| ActionError::retryable(format!("cannot rename {}: {e}", temp.display())))?;
        let again = verify_snapshot(&kept)?;
        if again.sha256 != checked.sha256 {
            return Err(ActionError::retryable(format!("the copy {} differs from {}", kept.display(), file.display())));
        }
    }
    let name = backup.as_deref().unwrap_or(&file).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(ChosenSnapshot {
        path: kept,
        sha256: checked.sha256,
        size: checked.size,
        source,
        backup,
        name,
        age_secs,
        age: human_age(age_secs),
        rpo_secs: params.rpo_secs,
        within_rpo: age_secs <= params.rpo_secs,
        revision,
    })
}

impl TypedAction for ChooseSnapshot {
    const KIND: &'static str = "etcd.choose-snapshot";
    type Params = ChooseSnapshotParams;
    type Output = ChosenSnapshot;

    fn params(&self) -> &ChooseSnapshotParams {
        &self.params
    }

    fn summary(&self, c: &ChosenSnapshot) -> String {
        let rpo = if c.within_rpo { "within the RPO".to_owned() } else { format!("OLDER THAN THE RPO ({})", human_age(c.rpo_secs)) };
        let source = match c.source {
            SnapshotSource::Live => "live snapshot".to_owned(),
            SnapshotSource::Backup => format!("backup {}", c.name),
        };
        format!("{source}, {} old ({rpo}), sha256 {}…, {} bytes", c.age, &c.sha256[..16.min(c.sha256.len())], c.size)
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<ChosenSnapshot, ActionError> {
        // The live snapshot, when the step that takes it succeeded (else it is skipped or failed: use a backup).
        let live = match &self.live {
            Some(handle) if ctx.inputs.contains_key(handle.id()) => Some(ctx.input(handle)?),
            _ => None,
        };
        let (params, now) = (self.params.clone(), now(ctx));
        super::blocking(ctx, "choosing the etcd snapshot", move |cancel| choose_blocking(&params, live, now, cancel)).await
    }
}

// ---------------------------------------------------------------- trial restore

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrialRestoreParams {
    /// The step whose chosen snapshot is tried.
    pub snapshot_from: StepId,
    /// Where scratch restores go (a directory per trial, removed after).
    pub work_dir: PathBuf,
}

/// What a trial restore showed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrialReport {
    pub sha256: String,
    /// `etcdutl` or `etcdctl`.
    pub tool: String,
    pub revision: Option<i64>,
    pub total_keys: Option<i64>,
}

/// `etcd.trial-restore`: the chosen snapshot restored into a scratch
/// directory on the bastion, so a snapshot that cannot be restored stops the
/// run before the gate — and before anything on the node is touched.
#[derive(Clone, Debug)]
pub struct TrialRestore {
    params: TrialRestoreParams,
    from: StepHandle<ChosenSnapshot>,
}

impl TrialRestore {
    pub fn new(from: &StepHandle<ChosenSnapshot>, work_dir: &Path) -> Self {
        TrialRestore { params: TrialRestoreParams { snapshot_from: from.id().clone(), work_dir: work_dir.to_owned() }, from: from.clone() }
    }
}

/// `etcdutl` (3.5+) or `etcdctl`, whichever the bastion has.
fn restore_tool() -> Option<(PathBuf, &'static str)> {
    let path = std::env::var_os("PATH")?;
    for tool in ["etcdutl", "etcdctl"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(tool);
            if candidate.is_file() {
                return Some((candidate, tool));
            }
        }
    }
    None
}

impl TypedAction for TrialRestore {
    const KIND: &'static str = "etcd.trial-restore";
    type Params = TrialRestoreParams;
    type Output = TrialReport;

    fn params(&self) -> &TrialRestoreParams {
        &self.params
    }

    fn summary(&self, r: &TrialReport) -> String {
        let revision = r.revision.map_or_else(|| "?".to_owned(), |v| v.to_string());
        let keys = r.total_keys.map_or_else(|| "?".to_owned(), |v| v.to_string());
        format!("the snapshot restores ({}): revision {revision}, {keys} keys", r.tool)
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<TrialReport, ActionError> {
        let chosen = ctx.input(&self.from)?;
        let path = chosen.path.clone();
        let checked = super::blocking(ctx, "checking the snapshot", move |_| verify_snapshot(&path)).await?;
        if checked.sha256 != chosen.sha256 {
            return Err(ActionError::permanent(format!(
                "{} changed since it was chosen (sha256 {} now, {} then); run the recovery again to choose anew",
                chosen.path.display(),
                checked.sha256,
                chosen.sha256
            )));
        }
        let (program, tool) = restore_tool().ok_or_else(|| {
            ActionError::permanent("no etcdutl or etcdctl on the bastion's PATH to try the snapshot with; install etcd-client")
        })?;
        let env = |p: CommandParams| {
            if tool == "etcdctl" {
                p.env(EnvVar { name: "ETCDCTL_API".into(), value: "3".into(), secret: false })
            } else {
                p
            }
        };
        let snapshot = chosen.path.to_string_lossy().into_owned();
        let status = run_owned(
            &env(CommandParams::new(&program).args(["snapshot", "status", &snapshot, "-w", "json"])),
            ctx,
            ctx.timeout(Some(Duration::from_secs(120))),
        )
        .await?;
        let json: serde_json::Value = status
            .output
            .text
            .lines()
            .find(|l| l.trim_start().starts_with('{'))
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or_default();
        let scratch = self.params.work_dir.join(format!("trial-{}", &chosen.sha256[..16.min(chosen.sha256.len())]));
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&self.params.work_dir)
            .map_err(|e| ActionError::permanent(format!("cannot create {}: {e}", self.params.work_dir.display())))?;
        let data_dir = scratch.to_string_lossy().into_owned();
        let restored = run_owned(
            &env(CommandParams::new(&program).args(["snapshot", "restore", &snapshot, "--data-dir", &data_dir])),
            ctx,
            ctx.timeout(Some(Duration::from_secs(600))),
        )
        .await
        .map_err(|e| ActionError::permanent(format!("the snapshot {} does not restore: {}; use another backup", chosen.path.display(), e.message)));
        let database = scratch.join("member/snap/db").is_file();
        let _ = std::fs::remove_dir_all(&scratch);
        restored?;
        if !database {
            return Err(ActionError::permanent(format!("a trial restore of {} produced no database; use another backup", chosen.path.display())));
        }
        Ok(TrialReport { sha256: chosen.sha256, tool: tool.to_owned(), revision: json["revision"].as_i64(), total_keys: json["totalKey"].as_i64() })
    }
}

// ---------------------------------------------------------------- restore

/// `etcd.restore-chosen`: `etcd.snapshot-restore` of the snapshot an
/// `etcd.choose-snapshot` step recorded (its params hold the rest: node, data
/// dir, cluster flags). Probe: the restore's own (its marker on the node).
#[derive(Clone, Debug)]
pub struct RestoreChosen {
    params: EtcdSnapshotRestore,
    from: StepHandle<ChosenSnapshot>,
}

impl RestoreChosen {
    /// `restore` with its snapshot path taken from `from`'s output at run time.
    pub fn new(mut restore: EtcdSnapshotRestore, from: &StepHandle<ChosenSnapshot>) -> Self {
        restore.snapshot = PathBuf::from(format!("(the snapshot chosen by step {})", from.id()));
        RestoreChosen { params: restore, from: from.clone() }
    }

    fn with_chosen(&self, ctx: &ActionCtx) -> Result<EtcdSnapshotRestore, ActionError> {
        let chosen = ctx.input(&self.from)?;
        Ok(EtcdSnapshotRestore { snapshot: chosen.path, ..self.params.clone() })
    }
}

impl TypedAction for RestoreChosen {
    const KIND: &'static str = "etcd.restore-chosen";
    type Params = EtcdSnapshotRestore;
    type Output = RestoreReport;

    fn params(&self) -> &EtcdSnapshotRestore {
        &self.params
    }

    fn summary(&self, report: &RestoreReport) -> String {
        TypedAction::summary(&self.params, report)
    }

    async fn run(&self, ctx: &ActionCtx) -> Result<RestoreReport, ActionError> {
        TypedAction::run(&self.with_chosen(ctx)?, ctx).await
    }

    async fn probe(&self, ctx: &ActionCtx) -> Result<Option<RestoreReport>, ActionError> {
        TypedAction::probe(&self.with_chosen(ctx)?, ctx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_people_read_them() {
        assert_eq!(human_age(59), "59s");
        assert_eq!(human_age(125), "2m05s");
        assert_eq!(human_age(2 * 3600 + 5 * 60), "2h05m");
        assert_eq!(human_age(30 * 3600), "1d06h");
    }
}
