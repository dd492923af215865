//! Engine benchmark: prints figures, asserts nothing. Run by `scripts/bench`
//! (release build); the last line printed is one JSON object.
//!
//! Modes (the first argument after `--`): none runs everything; `concurrent`
//! runs only the 200-run case and reports its peak RSS (a process of its own,
//! so earlier phases do not count); `single` the one-run case; `fill DIR N`
//! fills a store with N finished 20-step runs (for `dr list` and the bytes on
//! disk per run); `resume-prepare DIR N` then `resume DIR N` time the resume
//! case alone (for a profiler; `resume` can be repeated on the same store).

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dr_orchestrator::runner::DriveOptions;
use dr_orchestrator::{Observer, Runner, RunnerOptions, SystemClock};
use dr_state::{Event, EventRecord, RunRecord, SledStore, Store};
use dr_workflows::DrCatalog;
use serde_json::{json, Value};

fn params(steps: usize, step_ms: u64) -> BTreeMap<String, String> {
    BTreeMap::from([("steps".to_owned(), steps.to_string()), ("step_ms".to_owned(), step_ms.to_string())])
}

fn runner(store: Arc<SledStore>, observer: Option<Arc<dyn Observer>>) -> Runner {
    let r = Runner::new(store, Arc::new(DrCatalog::new()), Arc::new(SystemClock), RunnerOptions::default());
    match observer {
        Some(o) => r.with_observer(o),
        None => r,
    }
}

/// Raw `write` + `fdatasync` of a 200-byte record for 2 s: (ops/s, p50 latency in ms).
fn raw_fdatasync(dir: &Path) -> (f64, f64) {
    let path = dir.join("raw-fdatasync");
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("open raw file");
    let record = [b'x'; 200];
    let start = Instant::now();
    let mut latencies = Vec::new();
    while start.elapsed() < Duration::from_secs(2) {
        let one = Instant::now();
        f.write_all(&record).expect("write");
        f.sync_data().expect("fdatasync");
        latencies.push(one.elapsed().as_secs_f64() * 1000.0);
    }
    let ops = latencies.len() as f64 / start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    (ops, percentile(&latencies, 0.5))
}

fn raw_sled_flush_ops_per_s(dir: &Path) -> f64 {
    let db = sled::open(dir.join("raw-sled")).expect("open sled");
    let value = [b'x'; 200];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(2) {
        db.insert(n.to_be_bytes(), &value[..]).expect("insert");
        db.flush().expect("flush");
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Records when each step finishes, to get per-step latencies.
#[derive(Default)]
struct StepClock {
    finishes: Mutex<Vec<Instant>>,
}

impl Observer for StepClock {
    fn on_transition(&self, _run: &RunRecord, events: &[EventRecord]) {
        let now = Instant::now();
        let mut f = self.finishes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for e in events {
            if matches!(e.event, Event::StepSucceeded { .. } | Event::RunCreated { .. }) {
                f.push(now);
            }
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn single_run(dir: &Path) -> (f64, f64, f64, f64) {
    let store = Arc::new(SledStore::open(dir.join("single")).expect("store"));
    let clock = Arc::new(StepClock::default());
    let r = runner(Arc::clone(&store), Some(clock.clone() as Arc<dyn Observer>));
    let mut latencies = Vec::new();
    let mut steps = 0usize;
    let mut total = Duration::ZERO;
    let syncs_before = store.sync_stats().syncs;
    for _ in 0..20 {
        clock.finishes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        let started = Instant::now();
        let run = r.create("synthetic", params(20, 0), None, None).await.expect("create");
        r.drive(run.id, DriveOptions::default()).await.expect("drive");
        total += started.elapsed();
        steps += 20;
        let f = clock.finishes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        latencies.extend(f.windows(2).map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0));
    }
    let syncs = store.sync_stats().syncs - syncs_before;
    latencies.sort_by(f64::total_cmp);
    (percentile(&latencies, 0.5), percentile(&latencies, 0.99), steps as f64 / total.as_secs_f64(), syncs as f64 / steps as f64)
}

async fn concurrent(dir: &Path, runs: usize) -> f64 {
    let store = Arc::new(SledStore::open(dir.join("concurrent")).expect("store"));
    let r = runner(store, None);
    let mut ids = Vec::new();
    for _ in 0..runs {
        ids.push(r.create("synthetic", params(20, 0), None, None).await.expect("create").id);
    }
    let started = Instant::now();
    let handles: Vec<_> = ids
        .into_iter()
        .map(|id| {
            let r = r.clone();
            tokio::spawn(async move { r.drive(id, DriveOptions::default()).await })
        })
        .collect();
    for h in handles {
        let out = h.await.expect("join").expect("drive");
        assert_eq!(out.run.status, dr_state::RunStatus::Succeeded);
    }
    (runs * 20) as f64 / started.elapsed().as_secs_f64()
}

/// Counts runs that have a step running again.
struct Started {
    count: AtomicUsize,
    target: usize,
    done: tokio::sync::Notify,
}

impl Observer for Started {
    fn on_transition(&self, _run: &RunRecord, events: &[EventRecord]) {
        if events.iter().any(|e| matches!(e.event, Event::StepStarted { .. }))
            && self.count.fetch_add(1, Ordering::SeqCst) + 1 == self.target
        {
            self.done.notify_one();
        }
    }
}

async fn resume_many(dir: &Path, runs: usize) -> f64 {
    let path = dir.join("resume");
    create_open_runs(&path, runs).await;
    resume_open_runs(&path, runs).await
}

/// Creates `runs` runs of 20 one-minute steps, not started.
async fn create_open_runs(path: &Path, runs: usize) {
    let store = Arc::new(SledStore::open(path).expect("store"));
    let r = runner(store, None);
    for _ in 0..runs {
        r.create("synthetic", params(20, 60_000), None, None).await.expect("create");
    }
}

/// Opens the store and takes every open run up until each has a step
/// running again (ms), then stops them (they stay open: this can be repeated).
async fn resume_open_runs(path: &Path, runs: usize) -> f64 {
    let started = Instant::now();
    let store = Arc::new(SledStore::open(path).expect("store"));
    let observer = Arc::new(Started { count: AtomicUsize::new(0), target: runs, done: tokio::sync::Notify::new() });
    let r = runner(Arc::clone(&store), Some(observer.clone() as Arc<dyn Observer>));
    let open = store.open_runs().expect("open runs");
    assert_eq!(open.len(), runs);
    let handles: Vec<_> = open
        .into_iter()
        .map(|id| {
            let r = r.clone();
            tokio::spawn(async move { r.drive(id, DriveOptions { resume: true, ..Default::default() }).await })
        })
        .collect();
    observer.done.notified().await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    r.shutdown_token().cancel();
    for h in handles {
        let _ = h.await;
    }
    ms
}

async fn fill_finished(dir: &Path, runs: usize) {
    let store = Arc::new(SledStore::open(dir).expect("store"));
    let r = runner(store, None);
    let mut handles = Vec::new();
    for chunk in 0..runs.div_ceil(250) {
        let n = 250.min(runs - chunk * 250);
        for _ in 0..n {
            let r = r.clone();
            handles.push(tokio::spawn(async move {
                let run = r.create("synthetic", params(20, 0), None, None).await.expect("create");
                r.drive(run.id, DriveOptions::default()).await.expect("drive");
            }));
        }
        for h in handles.drain(..) {
            h.await.expect("join");
        }
    }
}

/// Writes back the page cache (sync(1)) and lets the disk rest a moment.
fn settle() {
    let _ = std::process::Command::new("sync").status();
    std::thread::sleep(Duration::from_millis(500));
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    // `dr` drives its run on a single-threaded runtime; many runs at once (the
    // concurrent case, as a daemon would) get the multi-threaded one.
    let runtime = match args.first().map(String::as_str) {
        Some("concurrent" | "fill") => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
        _ => tokio::runtime::Builder::new_current_thread().enable_all().build(),
    }
    .expect("runtime");
    let base = std::env::var_os("DR_BENCH_DIR").map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(base).expect("temp dir");
    match args.first().map(String::as_str) {
        Some("concurrent") => {
            let steps_per_s = runtime.block_on(concurrent(dir.path(), 200));
            println!("{}", json!({ "concurrent_steps_per_s": steps_per_s, "peak_rss_mb": peak_rss_mb() }));
        }
        Some("single") => {
            let (p50, p99, single, syncs) = runtime.block_on(single_run(dir.path()));
            println!("{}", json!({ "single_run_step_p50_ms": p50, "single_run_step_p99_ms": p99, "single_run_steps_per_s": single, "store_syncs_per_step": syncs }));
        }
        // For profiling the resume case alone: `resume-prepare DIR N`, then `resume DIR N` (repeatable).
        Some("resume-prepare" | "resume") => {
            let target = Path::new(args.get(1).expect("resume[-prepare] DIR RUNS"));
            let runs: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(1000);
            if args[0] == "resume" {
                let ms = runtime.block_on(resume_open_runs(target, runs));
                println!("{}", json!({ "resume_runs_ms": ms, "runs": runs }));
            } else {
                runtime.block_on(create_open_runs(target, runs));
            }
        }
        Some("fill") => {
            let target = args.get(1).expect("fill DIR RUNS");
            let runs: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(10_000);
            runtime.block_on(fill_finished(Path::new(target), runs));
        }
        _ => {
            // Each phase starts with the page cache written back, so one
            // phase's writeback does not slow the next.
            settle();
            let (raw, raw_p50) = raw_fdatasync(dir.path());
            eprintln!("raw fdatasync: {raw:.0}/s, p50 {raw_p50:.3} ms");
            settle();
            let (p50, p99, single, syncs) = runtime.block_on(single_run(dir.path()));
            eprintln!("single run: p50 {p50:.3} ms, p99 {p99:.3} ms, {single:.0} steps/s, {syncs:.2} syncs/step");
            settle();
            let sled_flush = raw_sled_flush_ops_per_s(dir.path());
            eprintln!("raw sled flush: {sled_flush:.0}/s");
            settle();
            let resume = runtime.block_on(resume_many(dir.path(), 1000));
            eprintln!("resume 1000 runs: {resume:.0} ms");
            let mut out: Value = json!({
                "raw_fdatasync_ops_per_s": raw,
                "raw_fdatasync_p50_ms": raw_p50,
                "raw_sled_flush_ops_per_s": sled_flush,
                "store_syncs_per_step": syncs,
                "single_run_step_p50_ms": p50,
                "single_run_step_p99_ms": p99,
                "single_run_steps_per_s": single,
                "resume_1000_runs_ms": resume,
            });
            let exe = std::env::current_exe().expect("own path");
            let child = std::process::Command::new(exe).arg("concurrent").output().expect("run concurrent case");
            let line = String::from_utf8_lossy(&child.stdout);
            if let Ok(Value::Object(extra)) = serde_json::from_str::<Value>(line.trim()) {
                if let Value::Object(o) = &mut out {
                    o.extend(extra);
                }
            }
            println!("{out}");
        }
    }
}
