//! Alertmanager's webhook: the payload (version 4), its schema check, the
//! `[[alerts]]` rules that map a firing alert to a workflow, and the durable
//! dedup that lets one alert firing episode start at most one run.
//!
//! Owns: [`Webhook`]/[`Alert`] (serde types), [`Alerts`] (rules + dedup
//! journal + the daemon's [`Starter`]), [`AlertOutcome`] (what each alert of a
//! notification did). Refuses: anything but version 4, a notification missing a
//! required field, a `$labels.NAME` naming a label the alert lacks. Knows no
//! HTTP (that is `http.rs`).
//!
//! Dedup, in the journal directory given to [`Alerts::open`]:
//! - `ep-<sha256(fingerprint, startsAt)>`: one record per firing episode, the
//!   run id chosen for it and what was started. Written with `put_new` (the
//!   arbiter) **before** [`Starter::start`] is called with that id; a re-sent
//!   alert whose record says "not started yet" completes the start (start is
//!   idempotent), so a crash between the record and the start neither loses
//!   the run nor doubles it. Once started, the record is rewritten `started`.
//! - `fp-<sha256(fingerprint)>`: the last run an alert (fingerprint) led to. A
//!   new episode of the same alert while that run is still open starts
//!   nothing: its episode record is joined to the open run, so repeats of that
//!   episode never start a run later either.
//!
//! Within the process, one lock per fingerprint serialises concurrent
//! notifications carrying the same alert; `put_new` still decides.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dr_state::RunId;
use dr_workflows::config::AlertRule;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::journal::Journal;
use crate::{StartRequest, Starter};

/// The only webhook payload version understood.
pub const WEBHOOK_VERSION: &str = "4";

/// What can go wrong handling a notification (apart from per-alert outcomes).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The body is not an Alertmanager version-4 notification; the message says why.
    #[error("not an alertmanager webhook (version 4): {0}")]
    Schema(String),
    /// The dedup journal could not be read or written: nothing was started for
    /// the alert concerned (a retry by Alertmanager is safe).
    #[error("alert journal {key}: {source}")]
    Journal {
        key: String,
        #[source]
        source: io::Error,
    },
    /// A dedup record cannot be read back.
    #[error("alert journal {key}: damaged record: {reason}")]
    Damaged { key: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Alertmanager's webhook notification, version 4.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub version: String,
    pub group_key: String,
    #[serde(default)]
    pub truncated_alerts: u64,
    pub status: String,
    pub receiver: String,
    #[serde(default)]
    pub group_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_annotations: BTreeMap<String, String>,
    #[serde(rename = "externalURL")]
    pub external_url: String,
    pub alerts: Vec<Alert>,
}

/// One alert of a notification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: String,
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    #[serde(default)]
    pub ends_at: String,
    #[serde(rename = "generatorURL", default)]
    pub generator_url: String,
    pub fingerprint: String,
}

impl Alert {
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map(String::as_str).unwrap_or("")
    }

    /// `NAME{k="v",…}` for people (labels sorted, `alertname` left out).
    pub fn describe(&self) -> String {
        let labels: Vec<String> = self
            .labels
            .iter()
            .filter(|(k, _)| k.as_str() != "alertname")
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        format!("{}{{{}}}", self.name(), labels.join(","))
    }
}

/// Parses and checks a notification body.
pub fn parse(body: &[u8]) -> Result<Webhook> {
    let webhook: Webhook = serde_json::from_slice(body).map_err(|e| Error::Schema(e.to_string()))?;
    check(&webhook)?;
    Ok(webhook)
}

/// The schema rules serde does not express.
pub fn check(webhook: &Webhook) -> Result<()> {
    let schema = |m: String| Err(Error::Schema(m));
    if webhook.version != WEBHOOK_VERSION {
        return schema(format!("version {:?}, expected {WEBHOOK_VERSION:?}", webhook.version));
    }
    if !matches!(webhook.status.as_str(), "firing" | "resolved") {
        return schema(format!("status {:?}, expected \"firing\" or \"resolved\"", webhook.status));
    }
    for (i, alert) in webhook.alerts.iter().enumerate() {
        if !matches!(alert.status.as_str(), "firing" | "resolved") {
            return schema(format!("alerts[{i}].status {:?}, expected \"firing\" or \"resolved\"", alert.status));
        }
        if alert.fingerprint.is_empty() {
            return schema(format!("alerts[{i}].fingerprint is empty"));
        }
        if alert.starts_at.is_empty() {
            return schema(format!("alerts[{i}].startsAt is empty"));
        }
    }
    Ok(())
}

/// What one alert of a notification did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum AlertOutcome {
    /// A run was started for this firing episode.
    Started { fingerprint: String, run: RunId },
    /// This episode (or an earlier one of the same alert whose run is still
    /// open) already has its run: nothing new.
    Duplicate { fingerprint: String, run: RunId },
    /// The alert is resolved; nothing acts on it.
    ResolvedIgnored { fingerprint: String },
    /// No `[[alerts]]` rule matches the alert.
    NoRule { fingerprint: String },
    /// A rule matched but the alert cannot start it (e.g. a `$labels.NAME` the
    /// alert does not carry): nothing was started.
    Refused { fingerprint: String, reason: String },
    /// The run was recorded for this episode but the daemon could not start
    /// it; the next notification of the episode tries again with the same id.
    StartFailed { fingerprint: String, run: RunId, reason: String },
}

impl AlertOutcome {
    /// The outcome's name, as in the JSON answer and the metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            AlertOutcome::Started { .. } => "started",
            AlertOutcome::Duplicate { .. } => "duplicate",
            AlertOutcome::ResolvedIgnored { .. } => "resolved-ignored",
            AlertOutcome::NoRule { .. } => "no-rule",
            AlertOutcome::Refused { .. } => "refused",
            AlertOutcome::StartFailed { .. } => "start-failed",
        }
    }

    /// Every outcome name, for metrics that list them all.
    pub const KINDS: [&'static str; 6] =
        ["started", "duplicate", "resolved-ignored", "no-rule", "refused", "start-failed"];
}

/// The first rule matching `alert` (alertname and every rule label equal).
pub fn find_rule<'r>(rules: &'r [AlertRule], alert: &Alert) -> Option<&'r AlertRule> {
    rules.iter().find(|rule| {
        alert.labels.get("alertname") == Some(&rule.alertname)
            && rule.labels.iter().all(|(k, v)| alert.labels.get(k) == Some(v))
    })
}

/// The rule's params with every `$labels.NAME` replaced by the alert's label.
/// A label the alert lacks is an error naming it (nothing may start).
pub fn substitute(params: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String> {
    params
        .iter()
        .map(|(key, template)| Ok((key.clone(), substitute_one(key, template, labels)?)))
        .collect()
}

fn substitute_one(key: &str, template: &str, labels: &BTreeMap<String, String>) -> Result<String, String> {
    const MARK: &str = "$labels.";
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at]);
        let after = &rest[at + MARK.len()..];
        let name_len = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
        let name = &after[..name_len];
        if name.is_empty() {
            return Err(format!("param {key}: \"$labels.\" names no label"));
        }
        match labels.get(name) {
            Some(value) => out.push_str(value),
            None => return Err(format!("param {key}: the alert has no label {name:?}")),
        }
        rest = &after[name_len..];
    }
    out.push_str(rest);
    Ok(out)
}

const RECORD_VERSION: u8 = 1;

/// A firing episode's dedup record (`ep-…`), JSON after a version byte.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct EpisodeRecord {
    fingerprint: String,
    starts_at: String,
    run: RunId,
    /// Whether `Starter::start` answered Ok for `run` (or, when `joined`, the
    /// run belongs to an earlier episode and was open when this one began).
    started: bool,
    joined: bool,
    workflow: String,
    params: BTreeMap<String, String>,
    automatic: Option<bool>,
    trigger: String,
}

/// An alert's last run (`fp-…`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct FingerprintRecord {
    fingerprint: String,
    run: RunId,
}

fn encode<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>> {
    let mut bytes = vec![RECORD_VERSION];
    let json = serde_json::to_vec(value)
        .map_err(|e| Error::Damaged { key: key.to_owned(), reason: format!("cannot encode: {e}") })?;
    bytes.extend(json);
    Ok(bytes)
}

fn decode<T: for<'de> Deserialize<'de>>(key: &str, bytes: &[u8]) -> Result<T> {
    let damaged = |reason: String| Error::Damaged { key: key.to_owned(), reason };
    match bytes.split_first() {
        Some((&RECORD_VERSION, json)) => serde_json::from_slice(json).map_err(|e| damaged(e.to_string())),
        Some((v, _)) => Err(damaged(format!("format version {v}, this dr reads {RECORD_VERSION}"))),
        None => Err(damaged("empty".to_owned())),
    }
}

fn sha256_hex(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The rules, the dedup journal and the daemon's starter.
pub struct Alerts {
    rules: Vec<AlertRule>,
    journal: Journal,
    starter: Arc<dyn Starter>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Held from "is the same recovery open already?" to its start, so that
    /// two alerts of one recovery (different fingerprints) start it once.
    starting: tokio::sync::Mutex<()>,
    counts: [AtomicU64; 6],
}

impl Alerts {
    /// Opens (creating) the dedup journal in `dir`.
    pub fn open(dir: impl Into<PathBuf>, rules: Vec<AlertRule>, starter: Arc<dyn Starter>) -> Result<Self> {
        let dir = dir.into();
        let journal =
            Journal::open(&dir).map_err(|source| Error::Journal { key: dir.display().to_string(), source })?;
        Ok(Alerts { rules, journal, starter, locks: Mutex::new(HashMap::new()), starting: tokio::sync::Mutex::new(()), counts: Default::default() })
    }

    /// How many alerts ended in each outcome since open, by [`AlertOutcome::kind`].
    pub fn outcome_counts(&self) -> BTreeMap<&'static str, u64> {
        AlertOutcome::KINDS.iter().zip(&self.counts).map(|(k, c)| (*k, c.load(Ordering::Relaxed))).collect()
    }

    /// Acts on every alert of `webhook`, in order. An error (the journal)
    /// stops at the alert concerned; alerts before it have acted.
    pub async fn handle(&self, webhook: &Webhook) -> Result<Vec<AlertOutcome>> {
        let mut outcomes = Vec::with_capacity(webhook.alerts.len());
        for alert in &webhook.alerts {
            let outcome = self.handle_alert(alert).await?;
            if let Some(i) = AlertOutcome::KINDS.iter().position(|k| *k == outcome.kind()) {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    async fn handle_alert(&self, alert: &Alert) -> Result<AlertOutcome> {
        let fingerprint = alert.fingerprint.clone();
        if alert.status != "firing" {
            return Ok(AlertOutcome::ResolvedIgnored { fingerprint });
        }
        let Some(rule) = find_rule(&self.rules, alert) else {
            return Ok(AlertOutcome::NoRule { fingerprint });
        };
        let params = match substitute(&rule.params, &alert.labels) {
            Ok(params) => params,
            Err(reason) => {
                return Ok(AlertOutcome::Refused { fingerprint, reason: format!("{}: {reason}", alert.describe()) })
            }
        };

        let lock = self.lock_for(&fingerprint);
        let outcome = {
            let _guard = lock.lock().await;
            self.firing(alert, rule, params).await
        };
        self.unlock(&fingerprint, lock);
        outcome
    }

    fn lock_for(&self, fingerprint: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        locks.entry(fingerprint.to_owned()).or_default().clone()
    }

    fn unlock(&self, fingerprint: &str, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut locks = self.locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Ours and the map's: nobody else waits, the entry can go.
        if Arc::strong_count(&lock) == 2 {
            locks.remove(fingerprint);
        }
    }

    async fn firing(&self, alert: &Alert, rule: &AlertRule, params: BTreeMap<String, String>) -> Result<AlertOutcome> {
        let fingerprint = alert.fingerprint.clone();
        let episode_key = format!("ep-{}", sha256_hex(&[&alert.fingerprint, &alert.starts_at]));
        let fingerprint_key = format!("fp-{}", sha256_hex(&[&alert.fingerprint]));

        if let Some(record) = self.read::<EpisodeRecord>(&episode_key).await? {
            return self.complete(&episode_key, &fingerprint_key, record).await;
        }

        // This episode's record: for the open run it joins, or for a new run not started yet.
        let episode = |run: RunId, joined: bool, params: BTreeMap<String, String>| EpisodeRecord {
            fingerprint: fingerprint.clone(),
            starts_at: alert.starts_at.clone(),
            run,
            started: joined,
            joined,
            workflow: rule.workflow.clone(),
            params,
            automatic: rule.automatic,
            trigger: format!("alert {}", alert.describe()),
        };
        if let Some(last) = self.read::<FingerprintRecord>(&fingerprint_key).await? {
            if self.starter.is_open(last.run) {
                // A new episode while the alert's run is still open: joined to it.
                // Started and joined: it is the open run's.
                let record = episode(last.run, true, params);
                if !self.put_new(&episode_key, &record).await? {
                    return self.reread(&episode_key, &fingerprint_key).await;
                }
                return Ok(AlertOutcome::Duplicate { fingerprint, run: last.run });
            }
        }

        let _starting = self.starting.lock().await;
        // Another alert's open run of the same recovery (workflow and parameters): joined to it.
        if let Some(run) = self.starter.open_run_like(&rule.workflow, &params) {
            let record = episode(run, true, params);
            if !self.put_new(&episode_key, &record).await? {
                return self.reread(&episode_key, &fingerprint_key).await;
            }
            let last = FingerprintRecord { fingerprint: fingerprint.clone(), run };
            self.put(&fingerprint_key, encode(&fingerprint_key, &last)?).await?;
            return Ok(AlertOutcome::Duplicate { fingerprint, run });
        }
        let record = episode(RunId(uuid::Uuid::now_v7()), false, params);
        if !self.put_new(&episode_key, &record).await? {
            return self.reread(&episode_key, &fingerprint_key).await;
        }
        let run = record.run;
        match self.start(&episode_key, &fingerprint_key, record).await? {
            None => Ok(AlertOutcome::Started { fingerprint, run }),
            Some(reason) => Ok(AlertOutcome::StartFailed { fingerprint, run, reason }),
        }
    }

    /// Another writer took the episode first: answer with its record.
    async fn reread(&self, episode_key: &str, fingerprint_key: &str) -> Result<AlertOutcome> {
        match self.read::<EpisodeRecord>(episode_key).await? {
            Some(record) => self.complete(episode_key, fingerprint_key, record).await,
            None => Err(Error::Damaged {
                key: episode_key.to_owned(),
                reason: "the record was taken but cannot be found".to_owned(),
            }),
        }
    }

    /// The episode has a record: a duplicate, after completing a start a crash (or a failure) cut.
    async fn complete(&self, episode_key: &str, fingerprint_key: &str, record: EpisodeRecord) -> Result<AlertOutcome> {
        let fingerprint = record.fingerprint.clone();
        let run = record.run;
        if record.started {
            return Ok(AlertOutcome::Duplicate { fingerprint, run });
        }
        match self.start(episode_key, fingerprint_key, record).await? {
            None => Ok(AlertOutcome::Started { fingerprint, run }),
            Some(reason) => Ok(AlertOutcome::StartFailed { fingerprint, run, reason }),
        }
    }

    /// Starts the recorded run (the episode record is durable already); marks
    /// it started. `Some(reason)` when the daemon refused.
    async fn start(&self, episode_key: &str, fingerprint_key: &str, mut record: EpisodeRecord) -> Result<Option<String>> {
        let last = FingerprintRecord { fingerprint: record.fingerprint.clone(), run: record.run };
        self.put(fingerprint_key, encode(fingerprint_key, &last)?).await?;
        let request = StartRequest {
            id: record.run,
            workflow: record.workflow.clone(),
            params: record.params.clone(),
            automatic: record.automatic,
            trigger: record.trigger.clone(),
        };
        if let Err(reason) = self.starter.start(request).await {
            return Ok(Some(reason));
        }
        record.started = true;
        self.put(episode_key, encode(episode_key, &record)?).await?;
        Ok(None)
    }

    async fn read<T: for<'de> Deserialize<'de> + Send + 'static>(&self, key: &str) -> Result<Option<T>> {
        let journal = self.journal.clone();
        let owned = key.to_owned();
        let bytes = blocking(key, move || journal.get(&owned)).await?;
        bytes.map(|bytes| decode(key, &bytes)).transpose()
    }

    async fn put_new(&self, key: &str, record: &EpisodeRecord) -> Result<bool> {
        let journal = self.journal.clone();
        let owned = key.to_owned();
        let bytes = encode(key, record)?;
        blocking(key, move || journal.put_new(&owned, &bytes)).await
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        let journal = self.journal.clone();
        let owned = key.to_owned();
        blocking(key, move || journal.put(&owned, &bytes)).await
    }
}

/// Journal I/O (fsyncs) off the runtime's threads.
async fn blocking<T: Send + 'static>(key: &str, f: impl FnOnce() -> io::Result<T> + Send + 'static) -> Result<T> {
    let journal_error = |source| Error::Journal { key: key.to_owned(), source };
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(journal_error),
        Err(join) => Err(journal_error(io::Error::other(format!("journal task failed: {join}")))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[track_caller]
    fn check_substitute(template: &str, alert_labels: &[(&str, &str)], expect: Result<&str, &str>) {
        let params = labels(&[("p", template)]);
        let got = substitute(&params, &labels(alert_labels));
        match (got, expect) {
            (Ok(got), Ok(want)) => assert_eq!(got["p"], want, "{template}"),
            (Err(got), Err(want)) => assert!(got.contains(want), "{template}: {got:?} lacks {want:?}"),
            (got, want) => panic!("{template}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn labels_are_substituted_into_params_and_a_missing_label_is_named() {
        let node = [("node", "w1"), ("namespace", "demo")];
        check_substitute("$labels.node", &node, Ok("w1"));
        check_substitute("plain", &node, Ok("plain"));
        check_substitute("$labels.namespace/$labels.node-x", &node, Ok("demo/w1-x"));
        check_substitute("$labels.pod", &node, Err("no label \"pod\""));
        check_substitute("$labels.", &node, Err("names no label"));
        // A label value holding the marker is not substituted again.
        check_substitute("$labels.a", &[("a", "$labels.b")], Ok("$labels.b"));
    }

    #[test]
    fn the_first_rule_whose_name_and_labels_match_wins() {
        let rule = |name: &str, ls: &[(&str, &str)], wf: &str| AlertRule {
            alertname: name.to_owned(),
            labels: labels(ls),
            workflow: wf.to_owned(),
            params: BTreeMap::new(),
            automatic: None,
        };
        let rules = vec![rule("A", &[("sev", "page")], "paged"), rule("A", &[], "any-a"), rule("B", &[], "b")];
        let alert = |ls: &[(&str, &str)]| Alert {
            status: "firing".into(),
            labels: labels(ls),
            annotations: BTreeMap::new(),
            starts_at: "t".into(),
            ends_at: String::new(),
            generator_url: String::new(),
            fingerprint: "f".into(),
        };
        let wf = |a: &Alert| find_rule(&rules, a).map(|r| r.workflow.as_str());
        assert_eq!(wf(&alert(&[("alertname", "A"), ("sev", "page")])), Some("paged"));
        assert_eq!(wf(&alert(&[("alertname", "A"), ("sev", "info")])), Some("any-a"));
        assert_eq!(wf(&alert(&[("alertname", "B")])), Some("b"));
        assert_eq!(wf(&alert(&[("alertname", "C")])), None);
        assert_eq!(wf(&alert(&[("sev", "page")])), None);
    }

    #[test]
    fn schema_errors_say_what_is_wrong() {
        let good = serde_json::json!({
            "version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": "firing",
            "receiver": "dr", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://am", "alerts": [{
                "status": "firing", "labels": {"alertname": "A"}, "annotations": {},
                "startsAt": "2030-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "", "fingerprint": "abc"}]
        });
        assert!(parse(good.to_string().as_bytes()).is_ok());
        let broken = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut v = good.clone();
            edit(&mut v);
            match parse(v.to_string().as_bytes()) {
                Err(Error::Schema(reason)) => reason,
                other => panic!("accepted or wrong error: {other:?}"),
            }
        };
        assert!(broken(&|v| v["version"] = "3".into()).contains("version \"3\""));
        assert!(broken(&|v| drop(v.as_object_mut().map(|o| o.remove("alerts")))).contains("missing field `alerts`"));
        assert!(broken(&|v| drop(v["alerts"][0].as_object_mut().map(|o| o.remove("fingerprint"))))
            .contains("missing field `fingerprint`"));
        assert!(broken(&|v| v["alerts"][0]["status"] = "weird".into()).contains("alerts[0].status"));
        assert!(broken(&|v| v["alerts"][0]["fingerprint"] = "".into()).contains("fingerprint is empty"));
        assert!(broken(&|v| v["status"] = 7.into()).contains("invalid type"));
        assert!(matches!(parse(b"not json"), Err(Error::Schema(_))));
    }
}
