//! `dr store check` and `dr store repair --accept-loss`: the state store's
//! write-ahead log, examined and (when the operator accepts the loss) cut at
//! its damage. `dr store stats`: how many runs the store holds and what they
//! take on disk. `dr gc`: the histories of old finished runs removed.
//!
//! Owns: the commands' arguments, output (text or one JSON object) and exit
//! codes: check 0 clean (a torn tail is clean: it is an unacknowledged write,
//! cut at the next open), 6 damaged, 5 busy, 4 no store; repair 0 repaired
//! (or nothing to repair), 2 without `--accept-loss`.
//! Refuses: the scan and the cut themselves (`dr_state::check`,
//! `dr_state::repair`), and any change to the store in `check`: neither
//! command checkpoints or truncates unless `repair --accept-loss` says so.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use dr_state::{CheckReport, RepairReport, RunLoss};
use serde_json::json;

use crate::{exit, print_json, print_text, usage};

#[derive(Debug, Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Check the store's write-ahead log without changing anything: exit 0 clean, 6 damaged (the file, byte offset and runs are named), 5 busy
    Check {
        /// One JSON object on stdout
        #[arg(long)]
        json: bool,
    },
    /// Cut a damaged write-ahead log at its damage and everything after it, and list which events each run lost
    Repair {
        /// Required: the transitions after the damage are lost (`dr store check` names them first)
        #[arg(long)]
        accept_loss: bool,
        /// One JSON object on stdout
        #[arg(long)]
        json: bool,
    },
    /// How many runs the store holds (by status) and the bytes it takes on disk, in all and per run
    Stats {
        /// One JSON object on stdout
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Runs that finished more than DAYS days ago (1 or more)
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub older_than: u32,
    /// Only list the runs that would be collected
    #[arg(long)]
    pub dry_run: bool,
    /// One JSON object on stdout
    #[arg(long)]
    pub json: bool,
}

/// `dr gc`: through the one client API, so `dr serve` removes while it runs.
pub async fn gc(state_dir: Option<PathBuf>, args: GcArgs) -> anyhow::Result<u8> {
    use dr_orchestrator::control::{Request, Response};
    let dir = state_dir.unwrap_or_else(crate::default_state_dir);
    if !crate::store_present(&dir) {
        return Err(anyhow::Error::new(crate::Worded { code: exit::NOT_FOUND, message: crate::no_store(&dir) }));
    }
    let client = crate::client::Client::from(crate::access(Some(dir.clone()))?);
    let older_than_ms = u64::from(args.older_than) * 86_400_000;
    let Response::Collected { runs, before, dry_run } = client.ask(Request::Gc { older_than_ms, dry_run: args.dry_run }).await? else {
        anyhow::bail!("unexpected control response")
    };
    use crate::render::{local_time, rfc3339};
    if args.json {
        let rows: Vec<serde_json::Value> = runs
            .iter()
            .map(|s| {
                json!({
                    "id": s.id.to_string(),
                    "workflow": s.workflow,
                    "status": s.status.as_str(),
                    "finished_at": s.finished_at.map_or(serde_json::Value::Null, rfc3339),
                })
            })
            .collect();
        print_json(&json!({ "dry_run": dry_run, "finished_before": rfc3339(before), "runs": rows, "count": runs.len() }))?;
        return Ok(exit::OK);
    }
    let verb = if dry_run { "Would remove" } else { "Removed" };
    let mut text = format!(
        "{verb} the histories of {} finished run(s) that ended before {}{}\n",
        runs.len(),
        local_time(before),
        if runs.is_empty() { "" } else { "; their summaries stay (dr list, dr stats)" }
    );
    for s in &runs {
        let finished = s.finished_at.map(local_time).unwrap_or_default();
        text.push_str(&format!("  {}  {:<24} {:<10} finished {finished}\n", s.id, s.workflow, s.status.as_str()));
    }
    print_text(&text)?;
    Ok(exit::OK)
}

pub fn run(state_dir: Option<PathBuf>, args: StoreArgs) -> anyhow::Result<u8> {
    let dir = state_dir.unwrap_or_else(crate::default_state_dir);
    if !crate::store_present(&dir) {
        return Err(anyhow::Error::new(crate::Worded { code: exit::NOT_FOUND, message: crate::no_store(&dir) }));
    }
    match args.command {
        StoreCommand::Check { json } => check(&dir, json),
        StoreCommand::Repair { accept_loss: false, .. } => Err(usage(
            "dr store repair cuts the damaged write-ahead log and loses every transition after the damage: \
             run `dr store check` to see which runs, then `dr store repair --accept-loss`",
        )),
        StoreCommand::Repair { accept_loss: true, json } => repair(&dir, json),
        StoreCommand::Stats { .. } => Err(anyhow::anyhow!("dr store stats is answered by store_cmd::stats")),
    }
}

/// Bytes of every file below `dir` (apparent size) and the blocks they take.
fn disk_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut apparent = 0;
    let mut allocated = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                apparent += meta.len();
                allocated += meta.blocks() * 512;
            }
        }
    }
    (apparent, allocated)
}

/// `dr store stats`: the runs (through the one client API: the store here, or its owner) and the bytes on disk.
pub async fn stats(state_dir: Option<PathBuf>, json: bool) -> anyhow::Result<u8> {
    let dir = state_dir.unwrap_or_else(crate::default_state_dir);
    if !crate::store_present(&dir) {
        return Err(anyhow::Error::new(crate::Worded { code: exit::NOT_FOUND, message: crate::no_store(&dir) }));
    }
    let (bytes, on_disk) = disk_usage(&dir);
    let client = crate::client::Client::from(crate::access(Some(dir.clone()))?);
    let dr_orchestrator::control::Response::List { runs, damaged } = client.ask(dr_orchestrator::control::Request::List).await? else {
        anyhow::bail!("unexpected control response")
    };
    let mut by_status = std::collections::BTreeMap::<&str, u64>::new();
    for (summary, _) in &runs {
        *by_status.entry(summary.status.as_str()).or_default() += 1;
    }
    let count = runs.len() as u64;
    let per_run = on_disk.checked_div(count).unwrap_or(0);
    if json {
        print_json(&json!({
            "store": dir.display().to_string(),
            "runs": count,
            "by_status": by_status,
            "damaged_records": damaged.len(),
            "bytes": bytes,
            "bytes_on_disk": on_disk,
            "bytes_on_disk_per_run": per_run,
        }))?;
    } else {
        let statuses: Vec<String> = by_status.iter().map(|(s, n)| format!("{n} {s}")).collect();
        print_text(&format!(
            "Store     {}\nRuns      {count} ({})\nOn disk   {} ({} of data); {} per run\n",
            dir.display(),
            if statuses.is_empty() { "none".to_owned() } else { statuses.join(", ") },
            human(on_disk),
            human(bytes),
            human(per_run),
        ))?;
        for d in &damaged {
            say!("dr: a damaged run record: {d}");
        }
    }
    Ok(if damaged.is_empty() { exit::OK } else { exit::CANNOT })
}

/// `1.2 MB`, `340 KB`, `12 B`.
fn human(bytes: u64) -> String {
    match bytes {
        0..=9_999 => format!("{bytes} B"),
        10_000..=999_999 => format!("{:.1} KB", bytes as f64 / 1000.0),
        1_000_000..=999_999_999 => format!("{:.1} MB", bytes as f64 / 1e6),
        _ => format!("{:.1} GB", bytes as f64 / 1e9),
    }
}

fn losses_text(runs: &[RunLoss]) -> String {
    runs.iter().map(|r| format!("  run {}: events {}\n", r.run, seqs(&r.events))).collect()
}

fn seqs(events: &[u64]) -> String {
    events.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

fn check(dir: &Path, json: bool) -> anyhow::Result<u8> {
    let report: CheckReport = dr_state::check(dir)?;
    let code = if report.damage.is_some() { exit::CANNOT } else { exit::OK };
    if let Some(warning) = &report.permission_warning {
        say!("dr: warning: {warning}");
    }
    if json {
        let status = if report.damage.is_some() { "damaged" } else { "clean" };
        let mut value = serde_json::to_value(&report)?;
        if let Some(object) = value.as_object_mut() {
            object.insert("status".into(), json!(status));
        }
        print_json(&value)?;
        return Ok(code);
    }
    let wal = report.wal.display();
    match &report.damage {
        None => {
            let mut text = format!("{wal}: clean ({} records, {} bytes; replayed at the next start)\n", report.records, report.wal_bytes);
            if let Some(torn) = report.torn_bytes {
                text.push_str(&format!("  a torn tail of {torn} bytes (a write that never completed, never acknowledged) is cut at the next start\n"));
            }
            print_text(&text)?;
        }
        Some(damage) => {
            let mut text = format!(
                "{wal}: damaged at byte {} ({} unreadable bytes); {} intact records before it, {} valid records after it",
                damage.offset, damage.unreadable_bytes, report.records, damage.records_after
            );
            if damage.undecodable_after > 0 {
                text.push_str(&format!(" ({} of them undecodable)", damage.undecodable_after));
            }
            text.push_str("\nruns whose events follow the damage (lost by a repair unless the store already has them):\n");
            text.push_str(&losses_text(&damage.runs));
            print_text(&text)?;
            say!("dr: the store refuses to open; `dr store repair --accept-loss` cuts the log at byte {} and lists what each run loses", damage.offset);
        }
    }
    Ok(code)
}

fn repair(dir: &Path, json: bool) -> anyhow::Result<u8> {
    let report: RepairReport = dr_state::repair(dir)?;
    if json {
        print_json(&serde_json::to_value(&report)?)?;
        return Ok(exit::OK);
    }
    let wal = report.wal.display();
    let mut text = match report.cut_at {
        None => format!("{wal}: no damage, nothing changed\n"),
        Some(offset) => format!("{wal}: cut at byte {offset} ({} bytes removed)\n", report.bytes_cut),
    };
    if report.cut_at.is_some() {
        if report.lost.is_empty() {
            text.push_str("no run lost an event the store did not already have\n");
        } else {
            text.push_str("lost:\n");
            text.push_str(&losses_text(&report.lost));
        }
        if report.undecodable_lost > 0 {
            text.push_str(&format!("and {} undecodable records (their runs are unknown)\n", report.undecodable_lost));
        }
    }
    print_text(&text)?;
    Ok(exit::OK)
}
