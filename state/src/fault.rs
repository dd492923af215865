//! Injected I/O faults, for the tests of the store's error handling only.
//!
//! With the `failpoints` feature, `DR_FAULT_SYNC=N` makes the Nth `fdatasync`
//! of the write-ahead log in this process fail with EIO, `DR_FAULT_WRITE=N`
//! the Nth log write (after writing half of it, as a full disk would), and
//! `DR_FAULT_CHECKPOINT_SYNC=N` the Nth sync a checkpoint (or the log's
//! truncation) performs. Unit tests arm the same faults per thread with
//! [`arm`]. Without either, [`inject`] is an inlined `Ok(())`.
//!
//! Refuses: faking success. A fault only ever turns a real call into an error
//! before it runs; the data written so far stays where the kernel put it.

/// Where a fault can be injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Site {
    LogWrite,
    LogSync,
    CheckpointSync,
}

#[cfg(any(test, feature = "failpoints"))]
fn eio(site: Site, n: u64) -> std::io::Error {
    let eio = std::io::Error::from_raw_os_error(libc::EIO);
    std::io::Error::new(eio.kind(), format!("{eio} (injected at {site:?} #{n})"))
}

#[cfg(test)]
thread_local! {
    static ARMED: std::cell::RefCell<Vec<(Site, u64)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Makes the `nth` call at `site` from now on, on this thread, fail with EIO.
#[cfg(test)]
pub(crate) fn arm(site: Site, nth: u64) {
    ARMED.with(|a| a.borrow_mut().push((site, nth)));
}

/// Forgets the faults armed on this thread.
#[cfg(test)]
pub(crate) fn disarm() {
    ARMED.with(|a| a.borrow_mut().clear());
}

/// Fails when a fault is due at `site`.
#[cfg(any(test, feature = "failpoints"))]
pub(crate) fn inject(site: Site) -> std::io::Result<()> {
    #[cfg(test)]
    {
        let due = ARMED.with(|a| {
            let mut armed = a.borrow_mut();
            let mut due = false;
            for entry in armed.iter_mut().filter(|entry| entry.0 == site) {
                entry.1 -= 1;
                due |= entry.1 == 0;
            }
            armed.retain(|(_, n)| *n > 0);
            due
        });
        if due {
            return Err(eio(site, 0));
        }
    }
    #[cfg(feature = "failpoints")]
    {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::OnceLock;
        static COUNTS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
        static TARGETS: OnceLock<[Option<u64>; 3]> = OnceLock::new();
        let targets = TARGETS.get_or_init(|| {
            let var = |name: &str| std::env::var(name).ok().and_then(|v| v.trim().parse().ok());
            [var("DR_FAULT_WRITE"), var("DR_FAULT_SYNC"), var("DR_FAULT_CHECKPOINT_SYNC")]
        });
        let index = match site {
            Site::LogWrite => 0,
            Site::LogSync => 1,
            Site::CheckpointSync => 2,
        };
        let n = COUNTS[index].fetch_add(1, Ordering::SeqCst) + 1;
        if targets[index] == Some(n) {
            return Err(eio(site, n));
        }
    }
    Ok(())
}

#[cfg(not(any(test, feature = "failpoints")))]
#[inline(always)]
pub(crate) fn inject(_site: Site) -> std::io::Result<()> {
    Ok(())
}
