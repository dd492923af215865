//! [`MemStore`]: an in-memory store with the same contract as
//! [`crate::SledStore`] (contiguous histories, atomic appends), for fast tests.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use crate::model::{EventRecord, Millis, RunId, RunRecord, RunSummary};
use crate::{Error, Result, Store, STATS_WINDOW};

#[derive(Default)]
pub struct MemStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    runs: BTreeMap<RunId, RunRecord>,
    events: BTreeMap<(RunId, u64), EventRecord>,
    stats: BTreeMap<(String, String), Vec<u64>>,
    /// Runs `collect` removed: their summary and when.
    collected: BTreeMap<RunId, (RunSummary, Millis)>,
}

impl std::fmt::Debug for MemStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemStore")
    }
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for MemStore {
    fn append(&self, run: &RunRecord, events: &[EventRecord]) -> Result<()> {
        let Some(first) = events.first() else { return Ok(()) };
        let mut inner = self.lock();
        let head = inner.runs.get(&run.id).map_or(0, |r| r.next_seq);
        let contiguous = events.windows(2).all(|w| w[1].seq == w[0].seq + 1);
        let last = events.last().map_or(first.seq, |e| e.seq);
        if head != first.seq || !contiguous || last + 1 != run.next_seq {
            return Err(Error::SequenceConflict { run: run.id.to_string(), expected: first.seq, found: head });
        }
        for e in events {
            inner.events.insert((run.id, e.seq), e.clone());
        }
        inner.runs.insert(run.id, run.clone());
        Ok(())
    }

    fn load(&self, id: RunId) -> Result<Option<RunRecord>> {
        let inner = self.lock();
        if let Some((_, at)) = inner.collected.get(&id) {
            return Err(Error::Collected { run: id.to_string(), at: *at });
        }
        Ok(inner.runs.get(&id).cloned())
    }

    fn events(&self, id: RunId) -> Result<Vec<EventRecord>> {
        let inner = self.lock();
        if let Some((_, at)) = inner.collected.get(&id) {
            return Err(Error::Collected { run: id.to_string(), at: *at });
        }
        Ok(inner.events.range((id, 0)..=(id, u64::MAX)).map(|(_, e)| e.clone()).collect())
    }

    fn summaries(&self) -> Result<Vec<Result<RunSummary>>> {
        let inner = self.lock();
        let mut all: BTreeMap<RunId, RunSummary> = inner.runs.values().map(|r| (r.id, r.summary())).collect();
        all.extend(inner.collected.iter().map(|(id, (s, _))| (*id, s.clone())));
        Ok(all.into_values().map(Ok).collect())
    }

    fn gc(&self, finished_before: Millis, now: Millis, dry_run: bool) -> Result<Vec<RunSummary>> {
        let mut inner = self.lock();
        let chosen: Vec<RunSummary> = inner
            .runs
            .values()
            .map(RunRecord::summary)
            .filter(|s| s.status.is_terminal() && s.finished_at.is_some_and(|f| f < finished_before))
            .collect();
        if !dry_run {
            for s in &chosen {
                inner.runs.remove(&s.id);
                let seqs: Vec<(RunId, u64)> = inner.events.range((s.id, 0)..=(s.id, u64::MAX)).map(|(k, _)| *k).collect();
                for k in seqs {
                    inner.events.remove(&k);
                }
                inner.collected.insert(s.id, (s.clone(), now));
            }
        }
        Ok(chosen)
    }

    fn open_runs(&self) -> Result<Vec<RunId>> {
        Ok(self.lock().runs.values().filter(|r| !r.status.is_terminal()).map(|r| r.id).collect())
    }

    fn run_ids(&self) -> Result<Vec<RunId>> {
        let inner = self.lock();
        let mut ids: Vec<RunId> = inner.runs.keys().chain(inner.collected.keys()).copied().collect();
        ids.sort_unstable();
        Ok(ids)
    }

    fn record_duration(&self, workflow: &str, step: &str, millis: u64) -> Result<()> {
        let mut inner = self.lock();
        let window = inner.stats.entry((workflow.to_owned(), step.to_owned())).or_default();
        window.push(millis);
        if window.len() > STATS_WINDOW {
            window.remove(0);
        }
        Ok(())
    }

    fn durations(&self, workflow: &str, step: &str) -> Result<Vec<u64>> {
        Ok(self.lock().stats.get(&(workflow.to_owned(), step.to_owned())).cloned().unwrap_or_default())
    }
}
