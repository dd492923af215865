//! The file system as the processes see it (the *current* state, all in
//! memory) and as the disk holds it (the *durable* state: the backing
//! directory, mirrored in memory). See the crate's top comment for the rules
//! that move the one to the other.
//!
//! Errors are `errno` values: what the FUSE adapter answers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub type Ino = u64;
/// The root directory's inode number (FUSE's).
pub const ROOT: Ino = 1;
pub type Errno = i32;

/// Nodes that hold no data: never written to the backing directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Special {
    Fifo,
    Socket,
}

#[derive(Debug)]
pub enum Kind {
    /// `cur`: the contents every read sees; `dur`: the contents the disk
    /// holds (set from `cur` by an fsync of the file).
    File { cur: Vec<u8>, dur: Vec<u8> },
    /// `cur`: the entries every lookup sees; `dur`: the entries the disk
    /// holds (set from `cur` by an fsync of the directory). `parent`: the
    /// current parent (for `..`).
    Dir { cur: BTreeMap<OsString, Ino>, dur: BTreeMap<OsString, Ino>, parent: Ino },
    Special(Special),
}

/// A directory entry as listed: inode, is a directory, special kind, name.
pub type Listed = (Ino, bool, Option<Special>, OsString);

#[derive(Debug)]
pub struct Node {
    pub kind: Kind,
    /// Permission bits as seen now.
    pub mode: u32,
    /// Permission bits as on disk: those at creation, then those of the last fsync.
    pub dur_mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
}

impl Node {
    pub fn size(&self) -> u64 {
        match &self.kind {
            Kind::File { cur, .. } => cur.len() as u64,
            Kind::Dir { .. } => 4096,
            Kind::Special(_) => 0,
        }
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir { .. })
    }
}

/// What this mount did to durability (reported when it ends).
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// fsyncs and fdatasyncs of files that made data durable.
    pub file_syncs: u64,
    /// fsyncs of directories that made entries durable.
    pub dir_syncs: u64,
    /// fsyncs answered "done" without doing anything (`--ignore-fsync`).
    pub ignored_syncs: u64,
}

/// Which fsyncs are answered "done" without doing anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ignore {
    /// None: fsync does what it says.
    Nothing,
    /// Every fsync and fdatasync, of files and directories.
    All,
    /// Those of files with this name (in any directory): one forgotten fsync.
    Named(OsString),
}

#[derive(Debug)]
pub struct Fs {
    backing: PathBuf,
    nodes: HashMap<Ino, Node>,
    next: Ino,
    ignore: Ignore,
    /// The power was cut: nothing is answered any more.
    pub dead: bool,
    pub stats: Stats,
}

/// The current time (a file system's timestamps are wall-clock time).
#[allow(clippy::disallowed_methods)]
pub fn now() -> SystemTime {
    SystemTime::now()
}

fn io_errno(e: &io::Error) -> Errno {
    e.raw_os_error().unwrap_or(libc::EIO)
}

impl Fs {
    /// Mounts `backing`: what it holds is both the current and the durable state.
    pub fn load(backing: &Path, ignore: Ignore) -> io::Result<Fs> {
        let meta = std::fs::metadata(backing)?;
        if !meta.is_dir() {
            return Err(io::Error::other(format!("{} is not a directory", backing.display())));
        }
        let mut fs = Fs { backing: backing.to_path_buf(), nodes: HashMap::new(), next: ROOT + 1, ignore, dead: false, stats: Stats::default() };
        let root = node_from(&meta, Kind::Dir { cur: BTreeMap::new(), dur: BTreeMap::new(), parent: ROOT });
        fs.nodes.insert(ROOT, root);
        fs.load_dir(backing, ROOT)?;
        Ok(fs)
    }

    fn load_dir(&mut self, path: &Path, ino: Ino) -> io::Result<()> {
        let mut entries = BTreeMap::new();
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            let meta = std::fs::symlink_metadata(entry.path())?;
            let child = self.next;
            if meta.is_dir() {
                self.next += 1;
                self.nodes.insert(child, node_from(&meta, Kind::Dir { cur: BTreeMap::new(), dur: BTreeMap::new(), parent: ino }));
                self.load_dir(&entry.path(), child)?;
            } else if meta.is_file() {
                self.next += 1;
                let data = std::fs::read(entry.path())?;
                self.nodes.insert(child, node_from(&meta, Kind::File { cur: data.clone(), dur: data }));
            } else {
                // Symlinks, sockets, devices: never written by this file system; not shown.
                continue;
            }
            entries.insert(entry.file_name(), child);
        }
        if let Some(Kind::Dir { cur, dur, .. }) = self.nodes.get_mut(&ino).map(|n| &mut n.kind) {
            *cur = entries.clone();
            *dur = entries;
        }
        Ok(())
    }

    pub fn node(&self, ino: Ino) -> Result<&Node, Errno> {
        self.nodes.get(&ino).ok_or(libc::ENOENT)
    }

    pub fn node_mut(&mut self, ino: Ino) -> Result<&mut Node, Errno> {
        self.nodes.get_mut(&ino).ok_or(libc::ENOENT)
    }

    fn entries(&self, dir: Ino) -> Result<&BTreeMap<OsString, Ino>, Errno> {
        match &self.node(dir)?.kind {
            Kind::Dir { cur, .. } => Ok(cur),
            _ => Err(libc::ENOTDIR),
        }
    }

    fn entries_mut(&mut self, dir: Ino) -> Result<&mut BTreeMap<OsString, Ino>, Errno> {
        match &mut self.node_mut(dir)?.kind {
            Kind::Dir { cur, .. } => Ok(cur),
            _ => Err(libc::ENOTDIR),
        }
    }

    pub fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Ino, Errno> {
        self.entries(parent)?.get(name).copied().ok_or(libc::ENOENT)
    }

    /// The current entries of a directory, with `.` and `..`.
    pub fn list(&self, dir: Ino) -> Result<Vec<Listed>, Errno> {
        let Kind::Dir { cur, parent, .. } = &self.node(dir)?.kind else { return Err(libc::ENOTDIR) };
        let mut out = vec![(dir, true, None, OsString::from(".")), (*parent, true, None, OsString::from(".."))];
        for (name, &ino) in cur {
            let node = self.node(ino)?;
            let special = match node.kind {
                Kind::Special(s) => Some(s),
                _ => None,
            };
            out.push((ino, node.is_dir(), special, name.clone()));
        }
        Ok(out)
    }

    /// Creates a node (a volatile entry until its directory is fsynced).
    pub fn create(&mut self, parent: Ino, name: &OsStr, kind: Kind, mode: u32, uid: u32, gid: u32) -> Result<Ino, Errno> {
        if self.entries(parent)?.contains_key(name) {
            return Err(libc::EEXIST);
        }
        let ino = self.next;
        self.next += 1;
        let kind = match kind {
            Kind::Dir { cur, dur, .. } => Kind::Dir { cur, dur, parent },
            other => other,
        };
        let t = now();
        let mode = mode & 0o7777;
        self.nodes.insert(ino, Node { kind, mode, dur_mode: mode, uid, gid, atime: t, mtime: t, ctime: t });
        self.entries_mut(parent)?.insert(name.to_os_string(), ino);
        self.touch(parent);
        Ok(ino)
    }

    fn touch(&mut self, ino: Ino) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            let t = now();
            node.mtime = t;
            node.ctime = t;
        }
    }

    pub fn unlink(&mut self, parent: Ino, name: &OsStr) -> Result<(), Errno> {
        let ino = self.lookup(parent, name)?;
        if self.node(ino)?.is_dir() {
            return Err(libc::EISDIR);
        }
        self.entries_mut(parent)?.remove(name);
        self.touch(parent);
        Ok(())
    }

    pub fn rmdir(&mut self, parent: Ino, name: &OsStr) -> Result<(), Errno> {
        let ino = self.lookup(parent, name)?;
        if !self.entries(ino)?.is_empty() {
            return Err(libc::ENOTEMPTY);
        }
        self.entries_mut(parent)?.remove(name);
        self.touch(parent);
        Ok(())
    }

    /// Whether `ancestor` is `ino` or one of its current parents.
    fn is_ancestor(&self, ancestor: Ino, mut ino: Ino) -> bool {
        for _ in 0..4096 {
            if ino == ancestor {
                return true;
            }
            match self.nodes.get(&ino).map(|n| &n.kind) {
                Some(Kind::Dir { parent, .. }) if *parent != ino => ino = *parent,
                _ => return false,
            }
        }
        false
    }

    pub fn rename(&mut self, parent: Ino, name: &OsStr, new_parent: Ino, new_name: &OsStr, noreplace: bool) -> Result<(), Errno> {
        let ino = self.lookup(parent, name)?;
        self.entries(new_parent)?;
        let moving_dir = self.node(ino)?.is_dir();
        if moving_dir && self.is_ancestor(ino, new_parent) {
            return Err(libc::EINVAL);
        }
        if let Ok(target) = self.lookup(new_parent, new_name) {
            if target == ino {
                return Ok(());
            }
            if noreplace {
                return Err(libc::EEXIST);
            }
            match (moving_dir, self.node(target)?.is_dir()) {
                (true, true) if !self.entries(target)?.is_empty() => return Err(libc::ENOTEMPTY),
                (false, true) => return Err(libc::EISDIR),
                (true, false) => return Err(libc::ENOTDIR),
                _ => {}
            }
        }
        self.entries_mut(parent)?.remove(name);
        self.entries_mut(new_parent)?.insert(new_name.to_os_string(), ino);
        if let Kind::Dir { parent: p, .. } = &mut self.node_mut(ino)?.kind {
            *p = new_parent;
        }
        self.touch(parent);
        self.touch(new_parent);
        Ok(())
    }

    fn data_mut(&mut self, ino: Ino) -> Result<&mut Vec<u8>, Errno> {
        match &mut self.node_mut(ino)?.kind {
            Kind::File { cur, .. } => Ok(cur),
            Kind::Dir { .. } => Err(libc::EISDIR),
            Kind::Special(_) => Err(libc::EINVAL),
        }
    }

    pub fn read(&self, ino: Ino, offset: u64, size: u32) -> Result<&[u8], Errno> {
        match &self.node(ino)?.kind {
            Kind::File { cur, .. } => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(cur.len());
                let end = start.saturating_add(size as usize).min(cur.len());
                Ok(&cur[start..end])
            }
            Kind::Dir { .. } => Err(libc::EISDIR),
            Kind::Special(_) => Err(libc::EINVAL),
        }
    }

    pub fn write(&mut self, ino: Ino, offset: u64, data: &[u8]) -> Result<usize, Errno> {
        let start = usize::try_from(offset).map_err(|_| libc::EFBIG)?;
        let end = start.checked_add(data.len()).ok_or(libc::EFBIG)?;
        let cur = self.data_mut(ino)?;
        if cur.len() < end {
            cur.resize(end, 0);
        }
        cur[start..end].copy_from_slice(data);
        self.touch(ino);
        Ok(data.len())
    }

    pub fn truncate(&mut self, ino: Ino, size: u64) -> Result<(), Errno> {
        let size = usize::try_from(size).map_err(|_| libc::EFBIG)?;
        self.data_mut(ino)?.resize(size, 0);
        self.touch(ino);
        Ok(())
    }

    /// fsync or fdatasync of a file or directory. With `--ignore-fsync`,
    /// answers that it is done and does nothing.
    pub fn fsync(&mut self, ino: Ino) -> Result<(), Errno> {
        self.node(ino)?;
        let ignored = match &self.ignore {
            Ignore::Nothing => false,
            Ignore::All => true,
            Ignore::Named(name) => self.nodes.values().any(|n| matches!(&n.kind, Kind::Dir { cur, .. } if cur.get(name) == Some(&ino))),
        };
        if ignored {
            self.stats.ignored_syncs += 1;
            return Ok(());
        }
        self.sync(ino).map_err(|e| io_errno(&e))
    }

    fn sync(&mut self, ino: Ino) -> io::Result<()> {
        let Some(node) = self.nodes.get_mut(&ino) else { return Ok(()) };
        node.dur_mode = node.mode;
        let dur_mode = node.dur_mode;
        let entries = match &mut node.kind {
            Kind::File { cur, dur } => {
                dur.clone_from(cur);
                None
            }
            Kind::Dir { cur, dur, .. } => Some((std::mem::replace(dur, cur.clone()), cur.clone())),
            Kind::Special(_) => return Ok(()),
        };
        let Some((old, new)) = entries else {
            self.stats.file_syncs += 1;
            for path in self.durable_paths(ino) {
                self.materialize(&path, ino, &mut HashSet::new())?;
            }
            return Ok(());
        };
        self.stats.dir_syncs += 1;
        for path in self.durable_paths(ino) {
            set_mode(&path, dur_mode)?;
            for (name, child) in &old {
                if new.get(name) != Some(child) {
                    remove_backing(&path.join(name))?;
                }
            }
            for (name, child) in &new {
                if old.get(name) != Some(child) {
                    let target = path.join(name);
                    remove_backing(&target)?;
                    self.materialize(&target, *child, &mut HashSet::new())?;
                }
            }
        }
        Ok(())
    }

    /// Where the disk holds `target`: every path reached from the backing
    /// root through durable entries (several after a rename whose two
    /// directories were not both fsynced).
    fn durable_paths(&self, target: Ino) -> Vec<PathBuf> {
        let mut found = Vec::new();
        if target == ROOT {
            found.push(self.backing.clone());
            return found;
        }
        let mut visited = HashSet::new();
        let mut stack = vec![(ROOT, self.backing.clone())];
        while let Some((dir, path)) = stack.pop() {
            if !visited.insert(dir) {
                continue;
            }
            let Some(Node { kind: Kind::Dir { dur, .. }, .. }) = self.nodes.get(&dir) else { continue };
            for (name, &child) in dur {
                let child_path = path.join(name);
                if child == target {
                    found.push(child_path.clone());
                }
                if matches!(self.nodes.get(&child).map(|n| &n.kind), Some(Kind::Dir { .. })) {
                    stack.push((child, child_path));
                }
            }
        }
        found
    }

    /// Writes the durable state of `ino` (and, for a directory, of all it
    /// durably holds) at `path` on the disk.
    fn materialize(&self, path: &Path, ino: Ino, visited: &mut HashSet<Ino>) -> io::Result<()> {
        let Some(node) = self.nodes.get(&ino) else { return Ok(()) };
        match &node.kind {
            Kind::File { dur, .. } => {
                if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
                    std::fs::remove_dir_all(path)?;
                }
                std::fs::write(path, dur)?;
                set_mode(path, node.dur_mode)
            }
            Kind::Dir { dur, .. } => {
                if !visited.insert(ino) {
                    return Ok(());
                }
                match std::fs::symlink_metadata(path) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        std::fs::remove_file(path)?;
                        std::fs::create_dir(path)?;
                    }
                    Err(_) => std::fs::create_dir(path)?,
                }
                set_mode(path, node.dur_mode)?;
                // What the directory held on disk before is replaced by what it holds durably now.
                let wanted: HashSet<&OsStr> = dur.keys().map(OsString::as_os_str).collect();
                for entry in std::fs::read_dir(path)? {
                    let entry = entry?;
                    if !wanted.contains(entry.file_name().as_os_str()) {
                        remove_backing(&entry.path())?;
                    }
                }
                for (name, &child) in dur {
                    self.materialize(&path.join(name), child, visited)?;
                }
                Ok(())
            }
            Kind::Special(_) => Ok(()),
        }
    }

    /// A clean unmount: everything current becomes durable (nothing with `--ignore-fsync`).
    pub fn sync_everything(&mut self) -> io::Result<()> {
        if self.ignore == Ignore::All {
            return Ok(());
        }
        let mut stack = vec![ROOT];
        let mut visited = HashSet::new();
        while let Some(ino) = stack.pop() {
            if !visited.insert(ino) {
                continue;
            }
            self.sync(ino)?;
            if let Some(Node { kind: Kind::Dir { cur, .. }, .. }) = self.nodes.get(&ino) {
                stack.extend(cur.values().copied());
            }
        }
        Ok(())
    }
}

fn node_from(meta: &std::fs::Metadata, kind: Kind) -> Node {
    let mode = meta.permissions().mode() & 0o7777;
    let t = |r: io::Result<SystemTime>| r.unwrap_or(SystemTime::UNIX_EPOCH);
    Node { kind, mode, dur_mode: mode, uid: meta.uid(), gid: meta.gid(), atime: t(meta.accessed()), mtime: t(meta.modified()), ctime: t(meta.modified()) }
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777))
}

fn remove_backing(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> Kind {
        Kind::Dir { cur: BTreeMap::new(), dur: BTreeMap::new(), parent: ROOT }
    }

    fn file() -> Kind {
        Kind::File { cur: Vec::new(), dur: Vec::new() }
    }

    fn reload(backing: &Path) -> Fs {
        Fs::load(backing, Ignore::Nothing).unwrap()
    }

    #[test]
    fn only_what_was_fsynced_is_on_disk() {
        let t = tempfile::tempdir().unwrap();
        let mut fs = reload(t.path());
        let d = fs.create(ROOT, OsStr::new("d"), dir(), 0o700, 0, 0).unwrap();
        let f = fs.create(d, OsStr::new("f"), file(), 0o600, 0, 0).unwrap();
        fs.write(f, 0, b"hello").unwrap();
        fs.fsync(f).unwrap();
        // The file's data is durable, but no entry leads to it.
        assert!(!t.path().join("d").exists());
        fs.fsync(d).unwrap();
        // d's entry for f is durable, d's own entry in the root is not.
        assert!(!t.path().join("d").exists());
        fs.fsync(ROOT).unwrap();
        assert_eq!(std::fs::read(t.path().join("d/f")).unwrap(), b"hello");
        assert_eq!(std::fs::metadata(t.path().join("d")).unwrap().permissions().mode() & 0o777, 0o700);
        // Unsynced data after that is not on disk; a synced truncate is.
        fs.write(f, 5, b" world").unwrap();
        assert_eq!(std::fs::read(t.path().join("d/f")).unwrap(), b"hello");
        fs.truncate(f, 2).unwrap();
        fs.fsync(f).unwrap();
        assert_eq!(std::fs::read(t.path().join("d/f")).unwrap(), b"he");
        let again = reload(t.path());
        let d2 = again.lookup(ROOT, OsStr::new("d")).unwrap();
        let f2 = again.lookup(d2, OsStr::new("f")).unwrap();
        assert_eq!(again.read(f2, 0, 100).unwrap(), b"he");
    }

    #[test]
    fn renames_and_unlinks_reach_the_disk_with_the_directory_fsync() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a"), b"old").unwrap();
        std::fs::write(t.path().join("gone"), b"x").unwrap();
        let mut fs = reload(t.path());
        let tmp = fs.create(ROOT, OsStr::new("a.tmp"), file(), 0o600, 0, 0).unwrap();
        fs.write(tmp, 0, b"new").unwrap();
        fs.fsync(tmp).unwrap();
        fs.rename(ROOT, OsStr::new("a.tmp"), ROOT, OsStr::new("a"), false).unwrap();
        fs.unlink(ROOT, OsStr::new("gone")).unwrap();
        assert_eq!(std::fs::read(t.path().join("a")).unwrap(), b"old");
        assert!(t.path().join("gone").exists());
        fs.fsync(ROOT).unwrap();
        assert_eq!(std::fs::read(t.path().join("a")).unwrap(), b"new");
        assert!(!t.path().join("gone").exists());
        assert!(!t.path().join("a.tmp").exists());
    }

    #[test]
    fn ignoring_fsync_makes_nothing_durable() {
        let t = tempfile::tempdir().unwrap();
        let mut fs = Fs::load(t.path(), Ignore::All).unwrap();
        let f = fs.create(ROOT, OsStr::new("f"), file(), 0o600, 0, 0).unwrap();
        fs.write(f, 0, b"x").unwrap();
        fs.fsync(f).unwrap();
        fs.fsync(ROOT).unwrap();
        fs.sync_everything().unwrap();
        assert!(!t.path().join("f").exists());
        assert_eq!(fs.stats.ignored_syncs, 2);
    }

    #[test]
    fn ignoring_the_fsyncs_of_one_name() {
        let t = tempfile::tempdir().unwrap();
        let mut fs = Fs::load(t.path(), Ignore::Named("wal".into())).unwrap();
        let wal = fs.create(ROOT, OsStr::new("wal"), file(), 0o600, 0, 0).unwrap();
        let other = fs.create(ROOT, OsStr::new("other"), file(), 0o600, 0, 0).unwrap();
        fs.write(wal, 0, b"record").unwrap();
        fs.write(other, 0, b"data").unwrap();
        fs.fsync(wal).unwrap();
        fs.fsync(other).unwrap();
        fs.fsync(ROOT).unwrap();
        assert_eq!(std::fs::read(t.path().join("wal")).unwrap(), b"");
        assert_eq!(std::fs::read(t.path().join("other")).unwrap(), b"data");
        assert_eq!((fs.stats.ignored_syncs, fs.stats.file_syncs, fs.stats.dir_syncs), (1, 1, 1));
    }
}
