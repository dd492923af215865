//! A journal of small durable records: one file per key in a directory.
//!
//! Each write is atomic and durable before it returns: the value goes to a
//! temporary file, which is fsynced, then renamed (or linked, for
//! [`Journal::put_new`]) to its key, and the directory is fsynced. A crash at
//! any point leaves either the old value or the new one, never a torn file.
//! Directories are 0700 and files 0600: records may name hosts and runs.
//!
//! Any failed sync is returned as an error; callers treat it as fatal for the
//! record (a retried fsync can report success for data that never reached the
//! disk), never as "written".

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A directory of records, one file per key.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl Journal {
    /// Opens (creating, mode 0700) the journal directory `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        if !dir.is_dir() {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        // Temporary files left by a crash are never records.
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(Journal { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: &str) -> io::Result<PathBuf> {
        check_key(key)?;
        Ok(self.dir.join(key))
    }

    fn write_tmp(&self, value: &[u8]) -> io::Result<PathBuf> {
        let tmp = self.dir.join(format!(".tmp-{}-{}", std::process::id(), TMP_SEQ.fetch_add(1, Ordering::Relaxed)));
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        let written = file.write_all(value).and_then(|()| file.sync_all());
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(tmp)
    }

    /// Writes `value` under `key`, replacing what was there; durable on return.
    pub fn put(&self, key: &str, value: &[u8]) -> io::Result<()> {
        let path = self.path(key)?;
        let tmp = self.write_tmp(value)?;
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        sync_dir(&self.dir)
    }

    /// Writes `value` under `key` only if no record has that key: `true` when
    /// written (durable on return), `false` when the key was taken.
    pub fn put_new(&self, key: &str, value: &[u8]) -> io::Result<bool> {
        let path = self.path(key)?;
        let tmp = self.write_tmp(value)?;
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => sync_dir(&self.dir).map(|()| true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The record under `key`, if any.
    pub fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.path(key)?) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes the record under `key` (nothing when there is none); durable on return.
    pub fn remove(&self, key: &str) -> io::Result<()> {
        match fs::remove_file(self.path(key)?) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every key, sorted.
    pub fn keys(&self) -> io::Result<Vec<String>> {
        let mut keys = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                keys.push(name);
            }
        }
        keys.sort();
        Ok(keys)
    }
}

/// Keys are file names: letters, digits, `-`, `_`, `.` and `:` (not leading `.`), at most 200 bytes.
fn check_key(key: &str) -> io::Result<()> {
    let ok = !key.is_empty()
        && key.len() <= 200
        && !key.starts_with('.')
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidInput, format!("journal key {key:?} is not a plain file name")))
    }
}

/// fsyncs a directory, so that entries created, renamed or removed in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_new_takes_a_key_once_and_put_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let j = Journal::open(dir.path().join("j")).expect("open");
        assert!(j.put_new("a:1", b"first").expect("put_new"));
        assert!(!j.put_new("a:1", b"second").expect("put_new again"));
        assert_eq!(j.get("a:1").expect("get").as_deref(), Some(&b"first"[..]));
        j.put("a:1", b"third").expect("put");
        assert_eq!(j.get("a:1").expect("get").as_deref(), Some(&b"third"[..]));
        assert_eq!(j.keys().expect("keys"), vec!["a:1".to_owned()]);
        j.remove("a:1").expect("remove");
        assert_eq!(j.get("a:1").expect("get"), None);
        assert!(j.keys().expect("keys").is_empty());
    }

    #[test]
    fn keys_that_are_not_plain_file_names_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let j = Journal::open(dir.path()).expect("open");
        for bad in ["", "../x", "a/b", ".hidden", "sp ace"] {
            assert!(j.put(bad, b"v").is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn records_are_private_to_the_owner_and_leftover_temporaries_are_dropped() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j");
        let j = Journal::open(&path).expect("open");
        j.put("k", b"v").expect("put");
        assert_eq!(fs::metadata(&path).expect("dir").permissions().mode() & 0o777, 0o700);
        assert_eq!(fs::metadata(path.join("k")).expect("file").permissions().mode() & 0o777, 0o600);
        fs::write(path.join(".tmp-1-1"), b"torn").expect("leftover");
        let j = Journal::open(&path).expect("reopen");
        assert_eq!(j.keys().expect("keys"), vec!["k".to_owned()]);
        assert!(!path.join(".tmp-1-1").exists());
    }
}
