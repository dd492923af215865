//! The FUSE adapter: every request is answered from [`Fs`] under one lock,
//! and with EIO once the power was cut.

use std::ffi::OsStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::model::{self, Fs, Ino, Kind, Node, Special};

/// Attributes and entries are never cached by the kernel: every lookup and
/// stat sees the model as it is.
const TTL: Duration = Duration::ZERO;

pub struct LazyFs {
    pub fs: Arc<Mutex<Fs>>,
}

pub fn lock(fs: &Mutex<Fs>) -> MutexGuard<'_, Fs> {
    fs.lock().unwrap_or_else(PoisonError::into_inner)
}

fn errno(e: model::Errno) -> Errno {
    Errno::from_i32(e)
}

fn attr(ino: Ino, node: &Node) -> FileAttr {
    let (kind, nlink) = match &node.kind {
        Kind::File { .. } => (FileType::RegularFile, 1),
        Kind::Dir { .. } => (FileType::Directory, 2),
        Kind::Special(Special::Fifo) => (FileType::NamedPipe, 1),
        Kind::Special(Special::Socket) => (FileType::Socket, 1),
    };
    let size = node.size();
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: node.atime,
        mtime: node.mtime,
        ctime: node.ctime,
        crtime: node.ctime,
        kind,
        perm: (node.mode & 0o7777) as u16,
        nlink,
        uid: node.uid,
        gid: node.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn file_type(is_dir: bool, special: Option<Special>) -> FileType {
    match (is_dir, special) {
        (true, _) => FileType::Directory,
        (false, Some(Special::Fifo)) => FileType::NamedPipe,
        (false, Some(Special::Socket)) => FileType::Socket,
        (false, None) => FileType::RegularFile,
    }
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => model::now(),
    }
}

impl LazyFs {
    /// The model, or EIO after the cut.
    fn live(&self) -> Result<MutexGuard<'_, Fs>, Errno> {
        let fs = lock(&self.fs);
        if fs.dead {
            return Err(Errno::EIO);
        }
        Ok(fs)
    }

    fn entry(&self, reply: ReplyEntry, f: impl FnOnce(&mut Fs) -> Result<Ino, model::Errno>) {
        let result = self.live().and_then(|mut fs| {
            let ino = f(&mut fs).map_err(errno)?;
            fs.node(ino).map(|n| attr(ino, n)).map_err(errno)
        });
        match result {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn empty(&self, reply: ReplyEmpty, f: impl FnOnce(&mut Fs) -> Result<(), model::Errno>) {
        match self.live().and_then(|mut fs| f(&mut fs).map_err(errno)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn new_node(&self, req: &Request, parent: INodeNo, name: &OsStr, kind: Kind, mode: u32, umask: u32) -> Result<Ino, model::Errno> {
        let mut fs = self.live().map_err(|e| e.code())?;
        fs.create(parent.0, name, kind, mode & !umask, req.uid(), req.gid())
    }
}

impl Filesystem for LazyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.entry(reply, |fs| fs.lookup(parent.0, name));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.live().and_then(|fs| fs.node(ino.0).map(|n| attr(ino.0, n)).map_err(errno)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let result = self.live().and_then(|mut fs| {
            if let Some(size) = size {
                fs.truncate(ino.0, size).map_err(errno)?;
            }
            let node = fs.node_mut(ino.0).map_err(errno)?;
            if let Some(mode) = mode {
                node.mode = mode & 0o7777;
            }
            if let Some(uid) = uid {
                node.uid = uid;
            }
            if let Some(gid) = gid {
                node.gid = gid;
            }
            if let Some(t) = atime {
                node.atime = time(t);
            }
            if let Some(t) = mtime {
                node.mtime = time(t);
            }
            node.ctime = model::now();
            Ok(attr(ino.0, node))
        });
        match result {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, _rdev: u32, reply: ReplyEntry) {
        let kind = match mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File { cur: Vec::new(), dur: Vec::new() },
            libc::S_IFIFO => Kind::Special(Special::Fifo),
            libc::S_IFSOCK => Kind::Special(Special::Socket),
            _ => return reply.error(Errno::EPERM),
        };
        let created = self.new_node(req, parent, name, kind, mode, umask);
        self.entry(reply, |_| created);
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let kind = Kind::Dir { cur: Default::default(), dur: Default::default(), parent: parent.0 };
        let created = self.new_node(req, parent, name, kind, mode, umask);
        self.entry(reply, |_| created);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.empty(reply, |fs| fs.unlink(parent.0, name));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.empty(reply, |fs| fs.rmdir(parent.0, name));
    }

    fn rename(&self, _req: &Request, parent: INodeNo, name: &OsStr, newparent: INodeNo, newname: &OsStr, flags: RenameFlags, reply: ReplyEmpty) {
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::EINVAL);
        }
        let noreplace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        self.empty(reply, |fs| fs.rename(parent.0, name, newparent.0, newname, noreplace));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let result = self.live().and_then(|mut fs| {
            fs.node(ino.0).map_err(errno)?;
            if flags.0 & libc::O_TRUNC != 0 && flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
                fs.truncate(ino.0, 0).map_err(errno)?;
            }
            Ok(())
        });
        match result {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, size: u32, _flags: OpenFlags, _lock: Option<LockOwner>, reply: ReplyData) {
        match self.live() {
            Ok(fs) => match fs.read(ino.0, offset, size) {
                Ok(data) => reply.data(data),
                Err(e) => reply.error(errno(e)),
            },
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.live().and_then(|mut fs| fs.write(ino.0, offset, data).map_err(errno)) {
            Ok(n) => reply.written(u32::try_from(n).unwrap_or(u32::MAX)),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock: LockOwner, reply: ReplyEmpty) {
        // close(2) makes nothing durable.
        self.empty(reply, |_| Ok(()));
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.empty(reply, |fs| fs.fsync(ino.0));
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let listed = self.live().and_then(|fs| fs.list(ino.0).map_err(errno));
        match listed {
            Ok(entries) => {
                for (i, (child, is_dir, special, name)) in entries.into_iter().enumerate().skip(usize::try_from(offset).unwrap_or(usize::MAX)) {
                    if reply.add(INodeNo(child), i as u64 + 1, file_type(is_dir, special), &name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.empty(reply, |fs| fs.fsync(ino.0));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        if self.live().is_err() {
            return reply.error(Errno::EIO);
        }
        reply.statfs(1 << 24, 1 << 23, 1 << 23, 1 << 20, 1 << 19, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        self.empty(reply, |fs| fs.node(ino.0).map(|_| ()));
    }

    fn create(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, flags: i32, reply: ReplyCreate) {
        let result = self.live().and_then(|mut fs| {
            let ino = match fs.lookup(parent.0, name) {
                Ok(_) if flags & libc::O_EXCL != 0 => return Err(Errno::EEXIST),
                Ok(ino) => {
                    if flags & libc::O_TRUNC != 0 {
                        fs.truncate(ino, 0).map_err(errno)?;
                    }
                    ino
                }
                Err(_) => fs
                    .create(parent.0, name, Kind::File { cur: Vec::new(), dur: Vec::new() }, mode & !umask, req.uid(), req.gid())
                    .map_err(errno)?,
            };
            fs.node(ino).map(|n| attr(ino, n)).map_err(errno)
        });
        match result {
            Ok(a) => reply.created(&TTL, &a, Generation(0), FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, length: u64, mode: i32, reply: ReplyEmpty) {
        if mode != 0 {
            return reply.error(Errno::from_i32(libc::EOPNOTSUPP));
        }
        self.empty(reply, |fs| {
            let end = offset.saturating_add(length);
            if fs.node(ino.0)?.size() < end {
                fs.truncate(ino.0, end)?;
            }
            Ok(())
        });
    }
}
