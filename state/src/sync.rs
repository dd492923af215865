//! Group commit: many writers, few syncs.
//!
//! A writer applies its sled transaction (in memory), then calls
//! [`GroupSync::sync`]. The first writer to find no sync in progress becomes
//! the leader: it notes how many writes have been applied, makes all of them
//! durable with one sled flush plus one `fdatasync` of the log file, and wakes
//! every writer whose write was covered. Writers that arrive while a sync is in
//! progress wait for the next one, which covers them all at once.
//!
//! sled 0.34's own flush ends in `sync_file_range`, which does not flush the
//! disk's write cache; the `fdatasync` is what makes a write survive a power cut.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};

pub(crate) struct GroupSync {
    state: Mutex<SyncState>,
    done: Condvar,
    syncs: AtomicU64,
}

#[derive(Default)]
struct SyncState {
    /// Writes applied so far (ticket numbers handed out).
    applied: u64,
    /// Every write with a ticket <= this is durable.
    durable: u64,
    syncing: bool,
    /// The error of the latest failed sync, reported to the writers it covered.
    failed_upto: u64,
    failure: Option<String>,
}

impl GroupSync {
    pub(crate) fn new() -> Self {
        GroupSync { state: Mutex::new(SyncState::default()), done: Condvar::new(), syncs: AtomicU64::new(0) }
    }

    /// How many physical syncs ran so far.
    pub(crate) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Blocks until every write applied before this call is durable.
    /// `flush` performs one physical sync of everything applied so far.
    pub(crate) fn sync(&self, flush: impl Fn() -> std::io::Result<()>) -> Result<(), String> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.applied += 1;
        let ticket = state.applied;
        loop {
            if state.durable >= ticket {
                return Ok(());
            }
            if state.failed_upto >= ticket {
                return Err(state.failure.clone().unwrap_or_else(|| "sync failed".to_owned()));
            }
            if !state.syncing {
                state.syncing = true;
                let upto = state.applied;
                drop(state);
                let result = flush();
                self.syncs.fetch_add(1, Ordering::Relaxed);
                state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                state.syncing = false;
                match result {
                    Ok(()) => state.durable = state.durable.max(upto),
                    Err(e) => {
                        state.failed_upto = state.failed_upto.max(upto);
                        state.failure = Some(e.to_string());
                    }
                }
                self.done.notify_all();
            } else {
                state = self.done.wait(state).unwrap_or_else(PoisonError::into_inner);
            }
        }
    }
}

/// `fdatasync` of a file (`File::sync_data` is `fdatasync` on Linux).
pub(crate) fn fdatasync(file: &File) -> std::io::Result<()> {
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    #[allow(clippy::disallowed_methods)] // a slow fake disk
    fn concurrent_writers_share_syncs() {
        let sync = Arc::new(GroupSync::new());
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let sync = Arc::clone(&sync);
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        sync.sync(|| {
                            std::thread::sleep(std::time::Duration::from_millis(1));
                            Ok(())
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // 800 writes; with sharing far fewer syncs than writes.
        assert!(sync.syncs() < 400, "syncs: {}", sync.syncs());
        assert!(sync.syncs() >= 50);
    }

    #[test]
    fn a_failed_sync_is_reported_to_the_writer() {
        let sync = GroupSync::new();
        let err = sync.sync(|| Err(std::io::Error::other("disk gone"))).unwrap_err();
        assert!(err.contains("disk gone"));
        // A later write gets a fresh sync.
        sync.sync(|| Ok(())).unwrap();
    }
}
