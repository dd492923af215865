//! `dr report`, `dr stats`, `dr maturity` over runs the engine made: the
//! incident report of a run with a retry, an operator's skip and a tolerated
//! failure, in ja and en against golden files (`DR_UPDATE_GOLDEN=1` rewrites
//! them), its JSON by field, its HTML rendered by headless Chromium; the
//! statistics against figures computed here; a maturity cell that a drill changes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{code, stderr, Bastion};

/// `dr` as the operator `tester`, in UTC (so the goldens do not depend on the machine's zone).
fn dr(b: &Bastion, args: &[&str]) -> Output {
    b.dr().args(args).env("USER", "tester").env_remove("SUDO_USER").env("TZ", "UTC").env_remove("LC_ALL").env("LANG", "C").output().expect("run dr")
}

/// A synthetic run with a retry, an operator's retry, an operator's skip and a tolerated failure.
fn eventful_run(b: &Bastion) -> String {
    let out = dr(
        b,
        &[
            "start", "synthetic", "-p", "steps=5", "-p", "step_ms=20", "-p", "fail_at=2,3,4", "-p", "fail_times=2", "-p", "attempts=2",
            "-p", "backoff_ms=10", "-p", "tolerate_at=4", "--detected-at", "-20m",
        ],
    );
    assert_eq!(code(&out), Some(3), "step-2 runs out of retries: {}", stderr(&out));
    let out = dr(b, &["retry", "@latest", "step-2"]);
    assert_eq!(code(&out), Some(3), "step-2 succeeds, step-3 runs out of retries: {}", stderr(&out));
    let out = dr(b, &["skip", "@latest", "step-3", "--reason", "restarted by hand on the node"]);
    assert_eq!(code(&out), Some(0), "step-4 fails, tolerated; step-5 succeeds: {}", stderr(&out));
    let out = dr(b, &["report", "@latest", "--set", "cause=a synthetic fault in steps 2-4", "--set", "lessons=retry budgets were too small"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let out = dr(b, &["report", "@latest", "--confirm", "backups=the nightly backup ran at 02:00", "--confirm", "logs"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    b.status()["id"].as_str().expect("id").to_owned()
}

/// Ids, times and durations replaced, so the golden holds from run to run.
fn normalise(text: &str) -> String {
    let rules = [
        (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<run>"),
        (r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", "<time>"),
        (r"(\d+時間)?(\d+分)?\d+(\.\d)?秒", "<dur>"),
        (r"\b(\d+h)?(\d+m)?\d+(\.\d)?s\b", "<dur>"),
    ];
    rules.iter().fold(text.to_owned(), |t, (pattern, with)| regex::Regex::new(pattern).unwrap().replace_all(&t, *with).into_owned())
}

fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/engine/golden").join(name);
    if std::env::var_os("DR_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}; DR_UPDATE_GOLDEN=1 writes it", path.display()));
    assert_eq!(actual, expected, "{} differs (DR_UPDATE_GOLDEN=1 rewrites it after a deliberate change)", path.display());
}

#[test]
fn the_report_of_a_run_with_a_retry_a_skip_and_a_tolerated_failure_matches_the_goldens() {
    let b = Bastion::new();
    let id = eventful_run(&b);
    for (lang, file) in [("ja", "report.ja.md"), ("en", "report.en.md")] {
        let out = dr(&b, &["report", &id, "--lang", lang]);
        assert_eq!(code(&out), Some(0), "{}", stderr(&out));
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains(&id), "the report names its run");
        golden(file, &normalise(&text));
    }
    // The language follows LANG when --lang is not given.
    let out = b.dr().args(["report", &id]).env("LANG", "ja_JP.UTF-8").env_remove("LC_ALL").env("TZ", "UTC").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("# インシデントレポート"), "{}", String::from_utf8_lossy(&out.stdout));
    let out = dr(&b, &["report", &id]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("# Incident report"));
}

#[test]
fn the_report_as_json_has_every_fact_by_field() {
    let b = Bastion::new();
    let id = eventful_run(&b);
    let out = dr(&b, &["report", &id, "--format", "json"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["run"], id.as_str());
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["level"], 1);
    assert_eq!(v["target_secs"], 900);
    // Detected 20 minutes before the start: the RTO (15 min) was missed, by about 5 minutes.
    assert_eq!(v["rto_met"], false, "{v}");
    let margin = v["rto_margin_secs"].as_i64().unwrap();
    assert!((-330..=-295).contains(&margin), "margin {margin}");
    assert!(v["actual_secs"].as_u64().unwrap() >= 1200);
    assert_eq!(v["rpo"], Value::Null, "a synthetic run restores nothing");
    let states: Vec<&str> = v["steps"].as_array().unwrap().iter().map(|s| s["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["succeeded", "succeeded", "skipped", "failed-tolerated", "succeeded"]);
    let attempts = v["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 9, "1 + 3 + 2 + 2 + 1 attempts");
    assert_eq!(attempts[1]["then"], "retry");
    assert_eq!(attempts[7]["then"], "tolerated");
    assert!(attempts[1]["error"].as_str().unwrap().contains("synthetic failure of step-2"));
    let decisions: Vec<(&str, &str, &str)> = v["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["what"].as_str().unwrap(), d["step"].as_str().unwrap(), d["by"].as_str().unwrap()))
        .collect();
    assert_eq!(decisions, [("retry", "step-2", "tester"), ("skipped", "step-3", "tester")]);
    assert_eq!(v["decisions"][1]["reason"], "restarted by hand on the node");
    assert_eq!(v["cause"]["value"], "a synthetic fault in steps 2-4");
    assert_eq!(v["cause"]["by"], "tester");
    assert_eq!(v["impact"], Value::Null);
    // The guide's checklist: items settled by evidence (a report field) or a confirmation, the rest open.
    let checklist: Vec<(&str, bool)> = v["checklist"].as_array().unwrap().iter().map(|c| (c["id"].as_str().unwrap(), c["done"].as_bool().unwrap())).collect();
    assert_eq!(
        checklist,
        [("services", false), ("data", false), ("backups", true), ("alerts", false), ("logs", true), ("report", true), ("improvements", true), ("drp", false)],
        "a synthetic run has no verification steps; cause and lessons were set; backups and logs confirmed"
    );
    assert_eq!(v["checklist"][2]["confirmed"]["value"], "the nightly backup ran at 02:00");
    assert_eq!(v["checklist"][2]["confirmed"]["by"], "tester");
    assert_eq!(v["checklist"][4]["confirmed"]["value"], "confirmed");
    assert_eq!(v["checklist"][6]["evidence"][0], "lessons: retry budgets were too small");
    assert!(v["projection"].as_array().unwrap().len() > 10, "a point per event");
    // The fields are events of the history, which still replays: dr resume of the ended run checks it.
    let history = b.assert_history_contiguous();
    assert_eq!(history.iter().filter(|e| e["kind"] == "report-field-set").count(), 4);
    let out = dr(&b, &["resume", &id]);
    assert_eq!(code(&out), Some(0), "an ended run with report fields loads (replay == snapshot): {}", stderr(&out));
}

#[test]
fn bad_report_arguments_are_usage_errors_that_say_what_is_accepted() {
    let b = Bastion::new();
    let out = dr(&b, &["start", "synthetic", "-p", "steps=1", "-p", "step_ms=1"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    for (args, says) in [
        (vec!["report", "@latest", "--lang", "fr"], "ja and en"),
        (vec!["report", "@latest", "--format", "pdf"], "md, html and json"),
        (vec!["report", "@latest", "--set", "blame=someone"], "cause, impact, lessons"),
        (vec!["report", "@latest", "--set", "cause"], "FIELD=TEXT"),
        (vec!["report", "@latest", "--confirm", "coffee"], "services, data, backups"),
    ] {
        let out = dr(&b, &args);
        assert_eq!(code(&out), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    let out = dr(&b, &["report", "nosuchrun"]);
    assert_eq!(code(&out), Some(4), "{}", stderr(&out));
}

/// Chromium, or a failure saying how to get it.
fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser"] {
        for dir in std::env::var("PATH").unwrap_or_default().split(':') {
            let path = Path::new(dir).join(name);
            if path.is_file() {
                return path;
            }
        }
    }
    panic!("chromium is not installed: run scripts/setup (it installs Debian's chromium package)");
}

/// A PNG's size and its distinct colours (8-bit RGB or RGBA, non-interlaced).
fn decode_png(bytes: &[u8]) -> (u32, u32, std::collections::HashSet<[u8; 3]>, usize) {
    use std::io::Read;
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let (mut width, mut height, mut channels) = (0u32, 0u32, 0usize);
    let mut data = Vec::new();
    let mut at = 8;
    while at + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let kind = &bytes[at + 4..at + 8];
        let body = &bytes[at + 8..at + 8 + len];
        match kind {
            b"IHDR" => {
                width = u32::from_be_bytes(body[0..4].try_into().unwrap());
                height = u32::from_be_bytes(body[4..8].try_into().unwrap());
                assert_eq!(body[8], 8, "bit depth");
                channels = match body[9] {
                    2 => 3,
                    6 => 4,
                    other => panic!("colour type {other}"),
                };
                assert_eq!(body[12], 0, "interlaced");
            }
            b"IDAT" => data.extend_from_slice(body),
            _ => {}
        }
        at += 12 + len;
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&data[..]).read_to_end(&mut raw).unwrap();
    let stride = width as usize * channels;
    let mut prev = vec![0u8; stride];
    let mut colours = std::collections::HashSet::new();
    let mut not_white = 0;
    for row in 0..height as usize {
        let filter = raw[row * (stride + 1)];
        let mut line = raw[row * (stride + 1) + 1..(row + 1) * (stride + 1)].to_vec();
        for i in 0..stride {
            let a = if i >= channels { line[i - channels] } else { 0 };
            let b = prev[i];
            let c = if i >= channels { prev[i - channels] } else { 0 };
            let add = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
                4 => {
                    let p = i16::from(a) + i16::from(b) - i16::from(c);
                    let (pa, pb, pc) = ((p - i16::from(a)).abs(), (p - i16::from(b)).abs(), (p - i16::from(c)).abs());
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                other => panic!("filter {other}"),
            };
            line[i] = line[i].wrapping_add(add);
        }
        for px in line.chunks(channels) {
            let rgb = [px[0], px[1], px[2]];
            if rgb != [255, 255, 255] {
                not_white += 1;
            }
            colours.insert(rgb);
        }
        prev = line;
    }
    (width, height, colours, not_white)
}

#[test]
fn the_html_report_is_one_self_contained_page_that_chromium_renders() {
    let chromium = chromium();
    let b = Bastion::new();
    let id = eventful_run(&b);
    let page = b.work.path().join("report.html");
    let out = dr(&b, &["report", &id, "--format", "html", "--lang", "ja", "-o", page.to_str().unwrap()]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "-o writes the file, not stdout");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<svg") && html.contains("RTO目標") && html.contains("予測所要時間"), "the chart with its target line and projection");
    assert_eq!(html.matches(r#"opacity="0.9""#).count(), 9, "a bar per attempt");
    for outside in ["http://", "https://", "<script", "<link", "src="] {
        let allowed = outside == "http://" && html.matches("http://").count() == html.matches("http://www.w3.org/2000/svg").count();
        assert!(!html.contains(outside) || allowed, "self-contained: no {outside}");
    }
    let png = b.work.path().join("report.png");
    let profile = b.work.path().join("chromium-profile");
    let rendered = Command::new(&chromium)
        .args(["--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg("--window-size=1100,900")
        .arg(format!("file://{}", page.display()))
        .env("HOME", b.work.path())
        .output()
        .expect("run chromium");
    assert!(rendered.status.success(), "chromium failed: {}", String::from_utf8_lossy(&rendered.stderr));
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot ({e}): {}", String::from_utf8_lossy(&rendered.stderr)));
    let (width, height, colours, not_white) = decode_png(&bytes);
    assert_eq!((width, height), (1100, 900), "the window's size");
    assert!(colours.len() > 3, "rendered, not blank: {} colours", colours.len());
    assert!(not_white > (width * height / 100) as usize, "more than 1% of the page is drawn: {not_white} pixels");
    // The red of the RTO target line and the green of a succeeded attempt are on the page.
    let near = |c: [u8; 3], want: [u8; 3]| c.iter().zip(want).all(|(a, b)| a.abs_diff(b) < 40);
    assert!(colours.iter().any(|c| near(*c, [0xd3, 0x2f, 0x2f])), "the target line's red");
    assert!(colours.iter().any(|c| near(*c, [0x2e, 0x7d, 0x32])), "a succeeded attempt's green");
}

fn ms(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().expect("a time")).expect("RFC 3339").timestamp_millis()
}

#[test]
fn stats_over_engine_made_runs_give_the_mttr_and_availability_computed_here() {
    let b = Bastion::new();
    // Three recoveries detected 30 min, 90 min and 3 h before they ran (two overlap in time), one cancelled.
    for (level, ago) in [("2", "-30m"), ("3", "-90m"), ("3", "-3h")] {
        let out = dr(&b, &["start", "synthetic", "-p", "steps=1", "-p", "step_ms=1", "-p", &format!("level={level}"), "--detected-at", ago]);
        assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    }
    let out = dr(&b, &["start", "synthetic", "-p", "steps=1", "-p", "step_ms=1", "-p", "fail_at=1", "-p", "fail_times=9", "-p", "attempts=1", "--detected-at", "-10m"]);
    assert_eq!(code(&out), Some(3), "{}", stderr(&out));
    let out = dr(&b, &["cancel", "@latest"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));

    // Independently, from the runs as dr list shows them.
    let out = dr(&b, &["list", "--json"]);
    let runs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs.len(), 4);
    let mut repair: Vec<f64> = runs
        .iter()
        .filter(|r| r["status"] == "succeeded")
        .map(|r| (ms(&r["finished_at"]) - ms(&r["incident_at"])) as f64 / 1000.0)
        .collect();
    repair.sort_by(f64::total_cmp);
    let mean = repair.iter().sum::<f64>() / repair.len() as f64;
    let p90 = repair[(repair.len() as f64 * 0.9).ceil() as usize - 1];
    let mut intervals: Vec<(i64, i64)> = runs.iter().map(|r| (ms(&r["incident_at"]), ms(&r["finished_at"]))).collect();
    intervals.sort();
    let (mut down, mut cur) = (0i64, intervals[0]);
    for &(a, e) in &intervals[1..] {
        if a <= cur.1 {
            cur.1 = cur.1.max(e);
        } else {
            down += cur.1 - cur.0;
            cur = (a, e);
        }
    }
    down += cur.1 - cur.0;
    assert!((3 * 3_600_000..3 * 3_600_000 + 60_000).contains(&down), "the 3 h incident covers the others: {down} ms");
    let availability = 1.0 - down as f64 / (365.0 * 86_400_000.0);

    let out = dr(&b, &["stats", "--json", "--include-synthetic"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["incidents"], 4);
    let close = |a: &Value, b: f64, what: &str| assert!((a.as_f64().unwrap() - b).abs() < 1e-6, "{what}: dr says {a}, the test {b}");
    close(&v["mttr_mean_secs"], mean, "MTTR mean");
    close(&v["mttr_p90_secs"], p90, "MTTR p90");
    close(&v["downtime_secs"], down as f64 / 1000.0, "downtime");
    close(&v["availability"], availability, "availability");
    assert_eq!(v["mttr_met"], true, "about 100 min against 2 h");
    assert_eq!(v["availability_met"], true);
    let levels: Vec<(u64, u64, u64)> =
        v["levels"].as_array().unwrap().iter().map(|l| (l["incidents"].as_u64().unwrap(), l["ended"].as_u64().unwrap(), l["rto_met"].as_u64().unwrap())).collect();
    // Level 1: the cancelled run (not met); 2: 30 min against 1 h (met); 3: 90 min and 3 h against 2 h (one met).
    assert_eq!(levels, [(1, 1, 0), (1, 1, 1), (2, 2, 1), (0, 0, 0)]);
    // Synthetic runs are not incidents unless asked for; the text form says the same figures.
    let v: Value = serde_json::from_slice(&dr(&b, &["stats", "--json"]).stdout).unwrap();
    assert_eq!(v["incidents"], 0);
    let text = String::from_utf8(dr(&b, &["stats", "--include-synthetic"]).stdout).unwrap();
    assert!(text.contains("MTTR: mean") && text.contains("Availability: 99.9"), "{text}");
    let out = dr(&b, &["stats", "--since", "yesterday-ish"]);
    assert_eq!(code(&out), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("YYYY-MM-DD"), "{}", stderr(&out));
    // dr status without an ID names the last drill (none here).
    let out = dr(&b, &["status"]);
    assert!(stderr(&out).contains("last drill: none recorded"), "{}", stderr(&out));
}

#[test]
fn a_succeeded_drill_changes_the_maturity_table_and_shows_in_stats_and_status() {
    let lab = dr_lab::lab::testing::TestLab::simulated().expect("the lab starts");
    let b = Bastion::new();
    let config = lab.config_path();
    let with_config = |args: &[&str]| {
        let mut all = vec!["--config", config.to_str().unwrap()];
        all.extend_from_slice(args);
        dr(&b, &all)
    };
    let before: Value = serde_json::from_slice(&with_config(&["maturity", "--json"]).stdout).expect("maturity --json");
    assert_eq!(before[1]["level"], 2);
    assert_eq!(before[1]["exercised"]["ok"], false, "{before}");
    assert_eq!(before[1]["workflow"]["ok"], true, "{before}");
    assert!(before[1]["workflow"]["reason"].as_str().unwrap().contains("worker-node-recovery"), "{before}");
    assert_eq!(before[1]["backups"]["ok"], Value::Null, "nothing checked the backups yet: {before}");

    let out = with_config(&["start", "dr-drill"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let after: Value = serde_json::from_slice(&with_config(&["maturity", "--json"]).stdout).unwrap();
    for row in after.as_array().unwrap() {
        assert_eq!(row["exercised"]["ok"], true, "a drill within 35 days exercises every level: {row}");
        assert!(row["exercised"]["reason"].as_str().unwrap().contains("dr-drill succeeded"), "{row}");
        assert_eq!(row["backups"]["ok"], true, "the drill's backup check, within the RPO: {row}");
    }
    let stats: Value = serde_json::from_slice(&with_config(&["stats", "--json"]).stdout).unwrap();
    assert_eq!(stats["incidents"], 0, "a drill is not an incident");
    let drills: Vec<&Value> = stats["drills"].as_object().unwrap().values().flat_map(|v| v.as_array().unwrap()).collect();
    assert_eq!(drills.len(), 1);
    assert_eq!(drills[0]["status"], "succeeded");
    assert!(drills[0]["minutes"].as_u64().is_some(), "its duration, the guide's 所要時間");
    let out = with_config(&["status"]);
    assert!(stderr(&out).contains("last drill: ") && stderr(&out).contains("(succeeded"), "{}", stderr(&out));
}
