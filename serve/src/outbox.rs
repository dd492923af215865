//! The notification outbox: what is owed to whom, durably. It owns three
//! [`Journal`]s under its directory and refuses to send anything (that is the
//! `Escalator`'s job) or to decide what is due (`escalate::due`).
//!
//! - `notes/KEY`: a recorded notification not yet delivered to all its routes
//!   (version byte 1 + JSON);
//! - `deliveries/KEY.ROUTE`: KEY was accepted by ROUTE (per route, so a
//!   failing route never makes a working one send again);
//! - `sent/KEY`: KEY is done; kept (a few bytes) so that KEY is never
//!   recorded again, until [`Outbox::forget_run`].
//!
//! Every change is durable before its method returns (journal: fsync of the
//! file and the directory); these methods block on that. Which keys exist is
//! also kept in memory, so recording a key seen before costs no I/O — the
//! daemon records everything `due` returns on every transition and tick.
//! Records hold no secret: notifications are made from run snapshots only.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use dr_state::RunId;
use tokio::sync::Notify;

use crate::escalate::{token, Notification};
use crate::journal::Journal;

const VERSION: u8 = 1;

/// The outbox; clones share it.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("dir", &self.inner.notes.dir().parent()).finish()
    }
}

struct Inner {
    notes: Journal,
    deliveries: Journal,
    sent: Journal,
    state: Mutex<State>,
    wake: Notify,
}

#[derive(Default)]
struct State {
    /// Every key recorded and not forgotten (pending or sent).
    known: HashSet<String>,
    pending: BTreeMap<String, Notification>,
    /// Delivery keys (`KEY.ROUTE`) of pending notifications.
    delivered: HashSet<String>,
}

fn delivery_key(key: &str, route: &str) -> String {
    format!("{key}.{}", token(route, 64))
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl Outbox {
    /// Opens (creating) the outbox in `dir` and loads what it holds. A record
    /// that cannot be read (another format version, damage) is left in place,
    /// counted as recorded and not sent, with a warning naming it.
    pub fn open(dir: impl AsRef<Path>) -> io::Result<Outbox> {
        let dir = dir.as_ref();
        let notes = Journal::open(dir.join("notes"))?;
        let deliveries = Journal::open(dir.join("deliveries"))?;
        let sent = Journal::open(dir.join("sent"))?;
        let mut state = State::default();
        state.known.extend(sent.keys()?);
        for key in notes.keys()? {
            if state.known.contains(&key) {
                // Marked sent, then cut before its note was removed.
                notes.remove(&key)?;
                continue;
            }
            state.known.insert(key.clone());
            let bytes = notes.get(&key)?.unwrap_or_default();
            match decode(&bytes) {
                Ok(note) if note.key == key => {
                    state.pending.insert(key, note);
                }
                Ok(_) => tracing::warn!(record = %key, "outbox record names another key; not sent"),
                Err(e) => tracing::warn!(record = %key, "outbox record not readable; not sent: {e}"),
            }
        }
        for key in deliveries.keys()? {
            let note = key.split_once('.').map_or(key.as_str(), |(note, _)| note);
            if state.pending.contains_key(note) {
                state.delivered.insert(key);
            } else {
                deliveries.remove(&key)?;
            }
        }
        let inner = Inner { notes, deliveries, sent, state: Mutex::new(state), wake: Notify::new() };
        Ok(Outbox { inner: Arc::new(inner) })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is a cache of the journals; a panic elsewhere leaves it usable.
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `note`, durably, and wakes the escalator: `true` when it is
    /// new, `false` when its key was recorded before (pending or sent) —
    /// then nothing is written.
    pub fn record(&self, note: &Notification) -> io::Result<bool> {
        let mut state = self.state();
        if state.known.contains(&note.key) {
            return Ok(false);
        }
        if note.key.contains('.') {
            return Err(invalid(format!("notification key {:?} contains '.'", note.key)));
        }
        let mut bytes = vec![VERSION];
        serde_json::to_writer(&mut bytes, note).map_err(|e| invalid(format!("notification {}: {e}", note.key)))?;
        let new = self.inner.notes.put_new(&note.key, &bytes)?;
        state.known.insert(note.key.clone());
        if new {
            state.pending.insert(note.key.clone(), note.clone());
            drop(state);
            self.inner.wake.notify_one();
        }
        Ok(new)
    }

    /// Whether a notification with `key` was ever recorded (pending or sent).
    pub fn knows(&self, key: &str) -> bool {
        self.state().known.contains(key)
    }

    /// The notifications not yet delivered to all their routes, oldest first.
    pub fn pending(&self) -> Vec<Notification> {
        let mut notes: Vec<Notification> = self.state().pending.values().cloned().collect();
        notes.sort_by(|a, b| (a.at_ms, &a.key).cmp(&(b.at_ms, &b.key)));
        notes
    }

    /// How many notifications are not yet delivered to all their routes.
    pub fn pending_count(&self) -> usize {
        self.state().pending.len()
    }

    /// Whether `route` accepted notification `key` (recorded durably).
    pub fn is_delivered(&self, key: &str, route: &str) -> bool {
        self.state().delivered.contains(&delivery_key(key, route))
    }

    /// Records durably that `route` accepted notification `key`.
    pub fn mark_delivered(&self, key: &str, route: &str) -> io::Result<()> {
        let delivery = delivery_key(key, route);
        let mut state = self.state();
        if !state.pending.contains_key(key) || state.delivered.contains(&delivery) {
            return Ok(());
        }
        self.inner.deliveries.put(&delivery, &[VERSION])?;
        state.delivered.insert(delivery);
        Ok(())
    }

    /// Records durably that notification `key` is done (every route has it);
    /// its key stays known, so it is never recorded again.
    pub fn mark_sent(&self, key: &str) -> io::Result<()> {
        let mut state = self.state();
        if !state.pending.contains_key(key) {
            return Ok(());
        }
        self.inner.sent.put(key, &[VERSION])?;
        state.pending.remove(key);
        self.inner.notes.remove(key)?;
        let prefix = format!("{key}.");
        let done: Vec<String> = state.delivered.iter().filter(|d| d.starts_with(&prefix)).cloned().collect();
        for delivery in done {
            self.inner.deliveries.remove(&delivery)?;
            state.delivered.remove(&delivery);
        }
        Ok(())
    }

    /// Drops every record of `run` (pending ones too): for runs that have
    /// ended and will not change again. Returns how many notifications it held.
    pub fn forget_run(&self, run: RunId) -> io::Result<usize> {
        let prefix = format!("{run}:");
        let mut state = self.state();
        let mut forgotten = 0;
        for journal in [&self.inner.deliveries, &self.inner.notes, &self.inner.sent] {
            for key in journal.keys()?.into_iter().filter(|k| k.starts_with(&prefix)) {
                journal.remove(&key)?;
            }
        }
        state.delivered.retain(|d| !d.starts_with(&prefix));
        state.pending.retain(|k, _| !k.starts_with(&prefix));
        state.known.retain(|k| {
            let ours = k.starts_with(&prefix);
            forgotten += usize::from(ours);
            !ours
        });
        Ok(forgotten)
    }

    /// Resolves when something was recorded since the last call.
    pub(crate) async fn woken(&self) {
        self.inner.wake.notified().await;
    }
}

fn decode(bytes: &[u8]) -> io::Result<Notification> {
    match bytes.split_first() {
        Some((&VERSION, json)) => serde_json::from_slice(json).map_err(|e| invalid(format!("bad record: {e}"))),
        Some((v, _)) => Err(invalid(format!("record format {v}, this dr reads {VERSION}"))),
        None => Err(invalid("empty record".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::escalate::NotificationKind;

    fn note(run: RunId, what: &str) -> Notification {
        Notification {
            key: format!("{run}:{what}"),
            run,
            workflow: "w".into(),
            level: 1,
            kind: NotificationKind::Started,
            title: "t".into(),
            text: "x".into(),
            at_ms: 0,
        }
    }

    #[test]
    fn a_key_is_recorded_once_across_reopen_and_after_it_was_sent() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunId::new_v7(1, 1);
        let outbox = Outbox::open(dir.path()).unwrap();
        assert!(outbox.record(&note(run, "started")).unwrap());
        assert!(!outbox.record(&note(run, "started")).unwrap());
        assert_eq!(outbox.pending_count(), 1);
        let outbox = Outbox::open(dir.path()).unwrap();
        assert!(!outbox.record(&note(run, "started")).unwrap());
        assert_eq!(outbox.pending().len(), 1);
        outbox.mark_delivered(&format!("{run}:started"), "slack ops").unwrap();
        assert!(outbox.is_delivered(&format!("{run}:started"), "slack ops"));
        assert!(!outbox.is_delivered(&format!("{run}:started"), "pager"));
        outbox.mark_sent(&format!("{run}:started")).unwrap();
        assert_eq!(outbox.pending_count(), 0);
        let outbox = Outbox::open(dir.path()).unwrap();
        assert_eq!(outbox.pending_count(), 0);
        assert!(!outbox.record(&note(run, "started")).unwrap(), "sent keys stay known");
        assert!(dir.path().join("deliveries").read_dir().unwrap().next().is_none(), "deliveries of sent notes are dropped");
    }

    #[test]
    fn deliveries_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunId::new_v7(1, 1);
        let outbox = Outbox::open(dir.path()).unwrap();
        outbox.record(&note(run, "at-risk")).unwrap();
        outbox.mark_delivered(&format!("{run}:at-risk"), "a").unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        assert!(outbox.is_delivered(&format!("{run}:at-risk"), "a"));
        assert!(!outbox.is_delivered(&format!("{run}:at-risk"), "b"));
    }

    #[test]
    fn forgetting_a_run_drops_only_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (RunId::new_v7(1, 1), RunId::new_v7(2, 2));
        let outbox = Outbox::open(dir.path()).unwrap();
        outbox.record(&note(a, "started")).unwrap();
        outbox.record(&note(a, "finished")).unwrap();
        outbox.mark_sent(&format!("{a}:started")).unwrap();
        outbox.record(&note(b, "started")).unwrap();
        assert_eq!(outbox.forget_run(a).unwrap(), 2);
        assert_eq!(outbox.pending().iter().map(|n| n.run).collect::<Vec<_>>(), [b]);
        let outbox = Outbox::open(dir.path()).unwrap();
        assert_eq!(outbox.pending_count(), 1);
        assert!(outbox.record(&note(a, "started")).unwrap(), "a forgotten key may be recorded again");
    }

    #[test]
    fn an_unreadable_record_is_kept_and_not_recorded_again() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunId::new_v7(1, 1);
        Outbox::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("notes").join(format!("{run}:started")), b"\x09junk").unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        assert_eq!(outbox.pending_count(), 0);
        assert!(!outbox.record(&note(run, "started")).unwrap());
    }
}
