//! `dr config check`: load `dr.toml` (from `--config`, `DR_CONFIG` or
//! `/etc/dr/dr.toml`), report whether it is valid, and with `--connect`
//! render each probe of what it names.
//!
//! Owns: the command's output (text or one JSON object) and its exit code:
//! 0 valid (and every check passed), 2 invalid or missing, 1 a check failed.
//! Refuses: the rules and the probes themselves (`dr_workflows::config`).

use std::path::PathBuf;

use dr_workflows::config::probe::{probe, Probe};
use dr_workflows::config::{Config, ConfigError, DEFAULT_PATH};
use serde_json::{json, Value};

use crate::args::{ConfigArgs, ConfigCheckArgs, ConfigCommand};
use crate::{exit, print_json, print_text};

pub async fn run(config: Option<PathBuf>, args: ConfigArgs) -> anyhow::Result<u8> {
    match args.command {
        ConfigCommand::Check(check_args) => check(config.unwrap_or_else(|| PathBuf::from(DEFAULT_PATH)), check_args).await,
    }
}

async fn check(path: PathBuf, args: ConfigCheckArgs) -> anyhow::Result<u8> {
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(error) => {
            if args.json {
                let report = json!({
                    "valid": false, "path": path, "digest": Value::Null, "errors": errors_json(&error), "checks": [],
                });
                print_json(&report)?;
            } else {
                match &error {
                    // One problem a line, as a compiler prints them (editors jump to FILE:LINE:COL).
                    ConfigError::Invalid(problems) => {
                        for problem in &problems.0 {
                            say!("{problem}");
                        }
                        let count = problems.0.len();
                        let plural = if count == 1 { "" } else { "s" };
                        say!("dr: {} is not valid ({count} problem{plural}); every key is in docs/CONFIG.md", path.display());
                    }
                    _ => say!("dr: {error}"),
                }
            }
            return Ok(exit::USAGE);
        }
    };
    let digest = config.digest();
    let checks = if args.connect { probe(&config).await } else { Vec::new() };
    let failed = checks.iter().filter(|c| !c.ok).count();
    if args.json {
        let report = json!({
            "valid": true, "path": config.path(), "digest": digest, "errors": [], "checks": checks,
        });
        print_json(&report)?;
    } else {
        let mut text = format!("{}: valid (digest {digest})\n", config.path().display());
        if args.connect {
            text.push_str(&checks_text(&checks));
        }
        print_text(&text)?;
        if failed > 0 {
            say!("dr: {failed} of {} checks failed; fix what they name and run `dr config check --connect` again", checks.len());
        }
    }
    Ok(if failed > 0 { exit::FAILED } else { exit::OK })
}

fn errors_json(error: &ConfigError) -> Value {
    match error {
        ConfigError::Invalid(problems) => json!(problems.0),
        ConfigError::Missing { path } | ConfigError::Unreadable { path, .. } => {
            json!([{ "file": path, "message": error.to_string() }])
        }
    }
}

fn checks_text(checks: &[Probe]) -> String {
    let name_width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0).max("CHECK".len());
    let target_width = checks.iter().map(|c| c.target.len()).max().unwrap_or(0).max("TARGET".len());
    let mut text = format!("{:name_width$}  {:target_width$}  RESULT  {:>8}  DETAIL\n", "CHECK", "TARGET", "LATENCY");
    for c in checks {
        let (result, detail) = if c.ok { ("ok", c.detail.as_deref()) } else { ("FAILED", c.error.as_deref()) };
        let latency = format!("{} ms", c.latency_ms);
        text.push_str(&format!(
            "{:name_width$}  {:target_width$}  {result:6}  {latency:>8}  {}\n",
            c.name,
            c.target,
            detail.unwrap_or_default()
        ));
    }
    text
}
