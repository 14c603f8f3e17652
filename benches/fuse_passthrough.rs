//! The FUSE limit: a bare read-only passthrough of one folder's files, on
//! the same `fuser` settings as `snapfs mount` (worker threads, cloned
//! device fds, largest reads and readahead, zero-message opens). Nothing is
//! decompressed or verified: a read is one `pread` of the source file.
//!
//! `benches/mount.sh` reads the same file through this, the mount and the
//! source tree in one run, so the mount's cold read can be put beside what
//! FUSE itself allows on the machine.
//!
//!     fuse_passthrough SOURCE_FOLDER MOUNTPOINT   # serves until unmounted
//!
//! Run without arguments (as `cargo test --all-targets` does) it does nothing.

use std::cell::RefCell;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEntry, ReplyOpen, Request, Session,
};

const ROOT: u64 = 1;
const TTL: Duration = Duration::from_secs(3600);

/// The regular files directly in the source folder; inode `2 + index`.
struct Passthrough {
    files: Vec<(OsString, File, FileAttr)>,
    zero_message_open: bool,
}

impl Passthrough {
    fn open(source: &Path) -> std::io::Result<Passthrough> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(source)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_file() {
                let ino = 2 + files.len() as u64;
                let attr = attr(ino, FileType::RegularFile, meta.len(), meta.mode());
                files.push((entry.file_name(), File::open(entry.path())?, attr));
            }
        }
        Ok(Passthrough {
            files,
            zero_message_open: false,
        })
    }

    fn file(&self, ino: INodeNo) -> Option<&(OsString, File, FileAttr)> {
        self.files.get(ino.0.checked_sub(2)? as usize)
    }
}

fn attr(ino: u64, kind: FileType, size: u64, mode: u32) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind,
        perm: (mode & 0o7777) as u16,
        nlink: 1,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl Filesystem for Passthrough {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(max) = config.set_max_readahead(u32::MAX) {
            let _ = config.set_max_readahead(max);
        }
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        self.zero_message_open = config
            .capabilities()
            .contains(InitFlags::FUSE_NO_OPEN_SUPPORT);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.files.iter().find(|(n, ..)| n == name) {
            Some((_, _, attr)) if parent.0 == ROOT => reply.entry(&TTL, attr, Generation(0)),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if ino.0 == ROOT {
            return reply.attr(&TTL, &attr(ROOT, FileType::Directory, 0, 0o755));
        }
        match self.file(ino) {
            Some((_, _, attr)) => reply.attr(&TTL, attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.zero_message_open {
            return reply.error(Errno::ENOSYS);
        }
        reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        thread_local! {
            static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        let Some((_, file, _)) = self.file(ino) else {
            return reply.error(Errno::ENOENT);
        };
        BUFFER.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            buffer.resize(size as usize, 0);
            let mut got = 0;
            while got < buffer.len() {
                match file.read_at(&mut buffer[got..], offset + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(_) => return reply.error(Errno::EIO),
                }
            }
            reply.data(&buffer[..got]);
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino.0 != ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        for (i, (name, _, attr)) in self.files.iter().enumerate().skip(offset as usize) {
            if reply.add(attr.ino, i as u64 + 1, FileType::RegularFile, name) {
                break;
            }
        }
        reply.ok();
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [source, mountpoint] = args.as_slice() else {
        eprintln!("usage: fuse_passthrough SOURCE_FOLDER MOUNTPOINT (serves until unmounted)");
        return Ok(());
    };
    let mut config = fuser::Config::default();
    config.mount_options = vec![MountOption::RO, MountOption::FSName("passthrough".into())];
    config.n_threads = Some(8);
    config.clone_fd = true;
    let session = Session::new(Passthrough::open(source)?, mountpoint, &config)?;
    snapfs::mount::raise_readahead(mountpoint);
    session.run()
}
