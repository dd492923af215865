//! `check` and `repair` of a state directory's write-ahead log, for
//! `dr store check` and `dr store repair --accept-loss`.
//!
//! Owns: naming damage (file, byte offset, the runs and events of the valid
//! records after it) and the one destructive repair: cutting the log at the
//! damage, then opening the store (which replays what is left) and listing
//! exactly which events each run lost.
//! Refuses: changing anything in [`check`]; it takes the store's lock (so no
//! other process writes meanwhile) and only reads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::envelope::decode;
use crate::sled_store::{acquire_lock, prepare_dir, scan_wal};
use crate::wal::{self, Damage, WalEntry};
use crate::{Error, Result, RunId, SledStore};

/// Events of one run, by sequence number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunLoss {
    pub run: String,
    pub events: Vec<u64>,
}

/// Damage followed by valid records.
#[derive(Clone, Debug, Serialize)]
pub struct WalDamage {
    /// Where the first bad record starts.
    pub offset: u64,
    /// Bytes from there to the first valid record after it.
    pub unreadable_bytes: u64,
    /// Valid records after the damage (they would be lost by cutting it).
    pub records_after: usize,
    /// Valid records after the damage whose content cannot be decoded.
    pub undecodable_after: usize,
    /// The runs and events those records carry.
    pub runs: Vec<RunLoss>,
}

/// What `dr store check` reports.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    pub wal: PathBuf,
    pub wal_bytes: u64,
    /// Intact records before any damage (they are applied at the next open).
    pub records: usize,
    /// A torn tail: bytes at the end with nothing valid after them (an
    /// unacknowledged write, cut at the next open).
    pub torn_bytes: Option<u64>,
    pub damage: Option<WalDamage>,
    pub permission_warning: Option<String>,
}

/// What `dr store repair --accept-loss` did.
#[derive(Clone, Debug, Serialize)]
pub struct RepairReport {
    pub wal: PathBuf,
    /// Where the log was cut (`None`: it had no damage, nothing was changed).
    pub cut_at: Option<u64>,
    pub bytes_cut: u64,
    /// Exactly the events each run lost (those the store no longer has).
    pub lost: Vec<RunLoss>,
    /// Records after the damage whose content could not be decoded (their
    /// runs are unknown).
    pub undecodable_lost: usize,
}

/// The runs and events of the records after `damage`, and how many could not be decoded.
fn runs_after(damage: &Damage) -> (Vec<RunLoss>, usize) {
    let mut runs: BTreeMap<[u8; 16], Vec<u64>> = BTreeMap::new();
    let mut undecodable = 0;
    for record in &damage.after {
        match decode::<WalEntry>(&record.payload) {
            Ok(entry) => runs.entry(entry.run).or_default().extend(entry.event_seqs()),
            Err(_) => undecodable += 1,
        }
    }
    let runs = runs
        .into_iter()
        .map(|(run, mut events)| {
            events.sort_unstable();
            events.dedup();
            RunLoss { run: RunId::from_key(&run).map_or_else(|| format!("{run:02x?}"), |id| id.to_string()), events }
        })
        .collect();
    (runs, undecodable)
}

fn describe(damage: &Damage) -> WalDamage {
    let (runs, undecodable_after) = runs_after(damage);
    let first_valid = damage.after.first().map_or(damage.offset, |r| r.offset);
    WalDamage {
        offset: damage.offset,
        unreadable_bytes: first_valid - damage.offset,
        records_after: damage.after.len(),
        undecodable_after,
        runs,
    }
}

/// The error an open returns for a damaged log.
pub(crate) fn damage_error(path: &Path, damage: &Damage) -> Error {
    let (runs, _) = runs_after(damage);
    Error::WalDamaged {
        path: path.to_path_buf(),
        offset: damage.offset,
        records_after: damage.after.len(),
        runs: runs.into_iter().map(|r| r.run).collect(),
    }
}

/// Reads the log of the store in `dir` and reports what it holds. Changes
/// nothing (it holds the store's lock while it reads: `Busy` when another
/// process owns the store).
pub fn check(dir: impl AsRef<Path>) -> Result<CheckReport> {
    let dir = dir.as_ref();
    let permission_warning = prepare_dir(dir, false)?;
    let _lock = acquire_lock(dir)?;
    let scanned = scan_wal(dir)?;
    Ok(CheckReport {
        wal: dir.join("wal"),
        wal_bytes: scanned.size,
        records: scanned.records.len(),
        torn_bytes: scanned.torn,
        damage: scanned.damage.as_ref().map(describe),
        permission_warning,
    })
}

/// Cuts a damaged log at its damage (and everything after it), opens the
/// store so that what is left is replayed, and reports exactly which events
/// each run lost: those of the cut records that the store does not have.
/// A log without damage is left as it is.
pub fn repair(dir: impl AsRef<Path>) -> Result<RepairReport> {
    let dir = dir.as_ref();
    let path = dir.join("wal");
    let (damage, size) = {
        let _lock = acquire_lock(dir)?;
        let scanned = scan_wal(dir)?;
        let Some(damage) = scanned.damage else {
            return Ok(RepairReport { wal: path, cut_at: None, bytes_cut: 0, lost: Vec::new(), undecodable_lost: 0 });
        };
        wal::cut(&path, damage.offset).map_err(|source| Error::Io { path: path.clone(), source })?;
        tracing::warn!(path = %path.display(), offset = damage.offset, "cut the write-ahead log at its damage (--accept-loss)");
        (damage, scanned.size)
        // The lock is let go here; the open below takes it again.
    };
    let (at_risk, undecodable_lost) = runs_after(&damage);
    let store = SledStore::open(dir)?;
    let mut lost = Vec::new();
    for RunLoss { run, events } in at_risk {
        let head = match run.parse::<uuid::Uuid>() {
            Ok(id) => store.head(RunId(id).as_bytes())?,
            Err(_) => 0,
        };
        let gone: Vec<u64> = events.into_iter().filter(|seq| *seq >= head).collect();
        if !gone.is_empty() {
            lost.push(RunLoss { run, events: gone });
        }
    }
    Ok(RepairReport { wal: path, cut_at: Some(damage.offset), bytes_cut: size - damage.offset, lost, undecodable_lost })
}
