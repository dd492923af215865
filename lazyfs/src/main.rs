//! `dr-lazyfs`: a FUSE file system that loses, when told to "cut the power",
//! everything a real disk could lose: what was written but not made durable
//! by an fsync. The technique of Jepsen's LazyFS, small and in Rust, for dr's
//! power-cut tests (`tests/tests/engine/powercut.rs`).
//!
//! ```text
//! dr-lazyfs BACKING MOUNTPOINT [--ignore-fsync | --ignore-fsync-of NAME]
//! ```
//!
//! Mounts MOUNTPOINT (as root with mount(2), else through `fusermount3`),
//! showing what BACKING holds, and prints `mounted` on stdout once it
//! answers. BACKING only ever holds **durable** state: after a cut it is
//! exactly what a disk would hold after a power cut, and a new `dr-lazyfs`
//! on it is the machine booting again.
//!
//! # Control (standard input, one word a line; the answer on stdout)
//! - `cut`: cut the power. Requests being answered finish (an fsync that
//!   completed is durable, as on a disk whose flush completed), every later
//!   request fails with EIO, the mount is detached (`umount -l`) and the
//!   process exits, dropping the volatile layer. Prints `cut` and the counts
//!   of syncs done and ignored.
//! - `stop`: a clean unmount: everything becomes durable first (as the
//!   kernel writes everything back at umount), then as `cut`. With
//!   `--ignore-fsync` nothing becomes durable, ever, so `stop` is a cut;
//!   with `--ignore-fsync-of NAME`, `stop` makes everything durable.
//! - end of input (the test that drives it died): as `cut`.
//! - SIGKILL of the process is a cut too, but leaves a dead mount
//!   ("transport endpoint is not connected") that the next mount detaches.
//!
//! # What is durable (the rules, stricter than ext4: what POSIX promises)
//! The file system holds every file and directory in memory twice: as the
//! processes see it (*current*) and as the disk holds it (*durable*, mirrored
//! in BACKING).
//! - Writes, truncations, fallocate and chmod change only the current state.
//! - `fsync`/`fdatasync` of a file make its current contents and size (and
//!   mode) durable — at every place the disk durably holds that file. A file
//!   no durable directory entry leads to keeps its durable contents in
//!   memory only (an orphan inode on a disk) until an entry for it is made
//!   durable.
//! - Creating, unlinking and renaming (files and directories) change only
//!   the current entries of the directories involved. `fsync` of a directory
//!   makes its current entries durable: entries gone from it leave BACKING,
//!   new ones appear there with their durable contents (a new file that was
//!   never fsynced appears empty; a new directory with its own durable
//!   entries). A rename is durable in each directory when that directory is
//!   fsynced (both, for a rename across directories). A new directory is on
//!   the disk only once its parent is fsynced.
//! - Nothing else makes anything durable: not close, not time passing, not
//!   sync_file_range (FUSE does not see it). No partial writes are kept: an
//!   unsynced write is lost whole (a real disk may keep any part of it; dr's
//!   log must cope with that anyway, and its torn-tail tests cover it).
//! - Sockets and FIFOs hold no data and never reach BACKING; symlinks and
//!   hard links are refused (dr makes none); timestamps and owners are not
//!   made durable.
//!
//! With `--ignore-fsync`, fsync and fdatasync of files and directories
//! succeed and do nothing: a file system that lies. With `--ignore-fsync-of
//! NAME`, only those of files named NAME (in any directory) do: one
//! forgotten fsync, e.g. of dr's write-ahead log (`wal`). The power-cut tests
//! use both to prove that their checker sees a missing fsync.
//!
//! The kernel caches no attributes or entries (TTL 0) and writes through
//! (no writeback cache), so every write reaches this process before the
//! write(2) returns.

mod fuse;
mod model;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use fuser::{Config, MountOption};

struct Args {
    backing: PathBuf,
    mountpoint: PathBuf,
    ignore: model::Ignore,
}

const USAGE: &str = "usage: dr-lazyfs BACKING MOUNTPOINT [--ignore-fsync | --ignore-fsync-of NAME]\n\
    then on standard input: `cut` (power cut: drop what was not fsynced, unmount, exit), \
    `stop` (clean unmount: make everything durable first), end of input = cut";

fn parse_args() -> Result<Args, String> {
    let mut paths = Vec::new();
    let mut ignore = model::Ignore::Nothing;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--ignore-fsync") => ignore = model::Ignore::All,
            Some("--ignore-fsync-of") => ignore = model::Ignore::Named(args.next().ok_or_else(|| USAGE.to_owned())?),
            Some("-h" | "--help") => return Err(USAGE.to_owned()),
            Some(s) if s.starts_with('-') => return Err(format!("unknown option {s}\n{USAGE}")),
            _ => paths.push(PathBuf::from(arg)),
        }
    }
    let [backing, mountpoint] = <[PathBuf; 2]>::try_from(paths).map_err(|_| USAGE.to_owned())?;
    Ok(Args { backing, mountpoint, ignore })
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // Nobody to tell when stdout is gone: the test that reads it died.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Detaches whatever is mounted at `mountpoint` (a dead mount of a killed
/// dr-lazyfs, or this one at its end).
fn detach(mountpoint: &Path) -> nix::Result<()> {
    nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    // A dr-lazyfs killed outright leaves a mount that answers nothing: take it away first.
    if matches!(std::fs::metadata(&args.mountpoint), Err(e) if e.raw_os_error() == Some(libc::ENOTCONN)) {
        let _ = detach(&args.mountpoint);
    }
    let fs = match model::Fs::load(&args.backing, args.ignore.clone()) {
        Ok(fs) => Arc::new(Mutex::new(fs)),
        Err(e) => {
            eprintln!("dr-lazyfs: cannot read the backing directory {}: {e}", args.backing.display());
            return ExitCode::from(1);
        }
    };
    let mut config = Config::default();
    config.mount_options = vec![MountOption::FSName("dr-lazyfs".into()), MountOption::Subtype("lazyfs".into()), MountOption::NoAtime];
    let session = match fuser::spawn_mount(fuse::LazyFs { fs: Arc::clone(&fs) }, &args.mountpoint, &config) {
        Ok(session) => session,
        Err(e) => {
            eprintln!(
                "dr-lazyfs: cannot mount {} ({e}); FUSE needs /dev/fuse and root (or fusermount3 from the fuse3 package)",
                args.mountpoint.display()
            );
            return ExitCode::from(1);
        }
    };
    let ignoring = match &args.ignore {
        model::Ignore::Nothing => String::new(),
        model::Ignore::All => " (ignoring every fsync)".into(),
        model::Ignore::Named(name) => format!(" (ignoring the fsyncs of files named {})", name.to_string_lossy()),
    };
    say(&format!("mounted {}{ignoring}", args.mountpoint.display()));

    let mut clean = false;
    for line in std::io::stdin().lock().lines() {
        match line.as_deref().map(str::trim) {
            Ok("cut") | Err(_) => break,
            Ok("stop") => {
                clean = true;
                break;
            }
            Ok("") => {}
            Ok(other) => say(&format!("unknown command {other:?}: cut or stop")),
        }
    }
    let (stats, synced) = {
        let mut fs = fuse::lock(&fs);
        let synced = if clean { fs.sync_everything().map_err(|e| e.to_string()) } else { Ok(()) };
        fs.dead = true;
        (fs.stats, synced)
    };
    if let Err(e) = detach(&args.mountpoint) {
        eprintln!("dr-lazyfs: detaching {}: {e}", args.mountpoint.display());
    }
    let word = if clean { "stopped" } else { "cut" };
    say(&format!("{word} file_syncs={} dir_syncs={} ignored_syncs={}", stats.file_syncs, stats.dir_syncs, stats.ignored_syncs));
    // Not joined: the session's thread may be waiting on a request of a process that is gone.
    std::mem::forget(session);
    match synced {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dr-lazyfs: making everything durable failed: {e}");
            ExitCode::from(1)
        }
    }
}
