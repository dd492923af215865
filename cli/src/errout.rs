//! Standard error that never blocks the engine: the log and the live view
//! hand their lines to a writer thread through a bounded queue. When stderr is
//! full (a pipe nobody reads: `dr start … 2>&1 | less` left alone) or closed,
//! lines are dropped and counted instead of stopping the recovery; the count
//! is said once stderr takes writes again.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Lines queued at most; beyond this, lines are dropped.
const QUEUE: usize = 4096;

struct Out {
    tx: Mutex<Option<SyncSender<Vec<u8>>>>,
    /// Lines handed over and not yet written (or dropped).
    pending: AtomicU64,
    dropped: AtomicU64,
    done: Mutex<Option<std::thread::JoinHandle<()>>>,
}

static OUT: OnceLock<Out> = OnceLock::new();

fn out() -> &'static Out {
    OUT.get_or_init(|| {
        let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE);
        let handle = std::thread::Builder::new().name("dr-stderr".into()).spawn(move || writer(&rx)).ok();
        Out { tx: Mutex::new(Some(tx)), pending: AtomicU64::new(0), dropped: AtomicU64::new(0), done: Mutex::new(handle) }
    })
}

fn writer(rx: &Receiver<Vec<u8>>) {
    let mut stderr = std::io::stderr();
    let mut reported = 0;
    while let Ok(bytes) = rx.recv() {
        let o = out();
        let dropped = o.dropped.load(Ordering::Relaxed);
        if dropped > reported {
            let _ = writeln!(stderr, "dr: [{} line(s) of output dropped: stderr was not being read]", dropped - reported);
            reported = dropped;
        }
        // A closed stderr fails fast; the lines are lost, never the process.
        let _ = stderr.write_all(&bytes).and_then(|()| stderr.flush());
        o.pending.fetch_sub(1, Ordering::Release);
    }
}

/// Queues `bytes` for stderr; drops them (counted) when the queue is full.
pub fn write(bytes: Vec<u8>) {
    let o = out();
    let guard = o.tx.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(tx) = guard.as_ref() else {
        // After finish: write directly (the process is ending anyway).
        let _ = std::io::stderr().write_all(&bytes);
        return;
    };
    o.pending.fetch_add(1, Ordering::Acquire);
    match tx.try_send(bytes) {
        Ok(()) => {}
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
            o.pending.fetch_sub(1, Ordering::Release);
            o.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Waits until what was queued is written, at most `timeout`, and no longer
/// than 200 ms without progress (a stuck stderr is not waited for).
pub fn drain(timeout: Duration) {
    let Some(o) = OUT.get() else { return };
    let deadline = Instant::now() + timeout;
    let (mut last, mut moved_at) = (o.pending.load(Ordering::Acquire), Instant::now());
    while last > 0 && Instant::now() < deadline && moved_at.elapsed() < Duration::from_millis(200) {
        #[allow(clippy::disallowed_methods)] // waiting for the writer thread, outside the engine
        std::thread::sleep(Duration::from_millis(2));
        let now = o.pending.load(Ordering::Acquire);
        if now != last {
            (last, moved_at) = (now, Instant::now());
        }
    }
}

/// At exit: writes what is queued (at most `timeout`), says how many lines
/// were dropped, and lets later writes go straight to stderr. The writer is
/// not joined: a stuck stderr must not hold the process (and its store lock).
pub fn finish(timeout: Duration) {
    let Some(o) = OUT.get() else { return };
    drain(timeout);
    drop(o.tx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take());
    drop(o.done.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take());
    let dropped = o.dropped.load(Ordering::Relaxed);
    if dropped > 0 {
        let _ = writeln!(std::io::stderr(), "dr: [{dropped} line(s) of output dropped in all: stderr was not being read]");
    }
}

/// A `tracing` writer onto the queue: one event, one write.
pub struct Writer(Vec<u8>);

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.0.is_empty() {
            write(std::mem::take(&mut self.0));
        }
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

pub fn make_writer() -> Writer {
    Writer(Vec::new())
}
