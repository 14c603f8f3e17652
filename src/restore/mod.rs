//! `snapfs restore`: write a snapshot (or a part of it) back to disk with its
//! metadata: modes, times, ownership (as root), symlinks, hard links, special
//! files, xattrs, and holes in sparse files.
//!
//! A damaged chunk fails the file that needs it, with a message; the rest of
//! the snapshot is still restored.
//!
//! # Restore never writes outside its target
//!
//! Restore runs as root into folders that tenants own and can change while
//! it runs (the everyday case: a tenant's folder restored into their home).
//! So the target path is resolved once, refusing symlinks on it, into a
//! directory descriptor ([`target::open_target`]); everything below is
//! reached from descriptors one name at a time, never following a link, and
//! everything in the way is replaced by removing that entry itself
//! ([`target`] explains how). Metadata is set on descriptors
//! ([`metadata::apply`]). A tenant racing a restore can make entries fail
//! (reported, exit code 4), not redirect a write.

pub mod target;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType};

use crate::error::{Error, IoContext, Result};
use crate::id::Id;
use crate::metadata::{self, Handle};
use crate::repository::Repository;
use crate::snapshot::{self, Node, NodeKind};
use target::FileId;

/// Zero runs of this many bytes (block-aligned) become holes.
const HOLE_BLOCK: usize = 4096;

#[derive(Debug, Default)]
pub struct RestoreOutcome {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    /// Chunks read from the repository: a chunk of zeros that repeats
    /// through a sparse file counts once.
    pub chunks_read: u64,
    /// One line per entry that could not be restored.
    pub errors: Vec<String>,
}

/// Restore `subpath` of the snapshot tree `root` into the folder `target`
/// (created if missing; a path through a symlink is refused).
///
/// A folder's entries go into `target`, which then gets the folder's own
/// metadata; for the snapshot root that is `root_node`, when the caller
/// has it (`None`: the target keeps its own). A file or other entry is
/// restored under its name inside `target`.
pub fn run(
    repo: &Repository,
    root: &Id,
    subpath: &[u8],
    target: &Path,
    root_node: Option<&Node>,
) -> Result<RestoreOutcome> {
    let node = snapshot::resolve(repo, root, subpath)?;
    let target_fd = target::open_target(target)?;
    raise_descriptor_limit();
    let mut restorer = Restorer {
        repo,
        target,
        target_fd: target_fd.as_fd(),
        restore_owner: unsafe { libc::geteuid() } == 0,
        hard_links: HashMap::new(),
        zero_chunks: HashMap::new(),
        buffer: Vec::new(),
        outcome: RestoreOutcome::default(),
    };
    let top = Path::new("");
    if node.is_dir() {
        let subtree = node
            .subtree
            .ok_or_else(|| Error::corrupt("directory", "has no tree"))?;
        restorer.restore_tree(&subtree, target_fd.as_fd(), top);
        let is_root = subpath.iter().all(|&b| b == b'/');
        if let Some(own) = if is_root { root_node } else { Some(&node) } {
            if let Err(e) = restorer.apply(Handle::Open(target_fd.as_fd()), own, top) {
                restorer.error(top, e);
            }
        }
    } else {
        let rel = Path::new(OsStr::from_bytes(&node.name));
        restorer.restore_node(target_fd.as_fd(), &node, rel);
    }
    Ok(restorer.outcome)
}

/// Restore holds one descriptor per folder level it is in; raise the soft
/// limit (often 1,024) to the hard one so that a deep tree does not fail
/// with EMFILE. Restore uses no select(), which is what the low soft limit
/// protects.
fn raise_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for both calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

struct Restorer<'a> {
    repo: &'a Repository,
    /// The target as the user gave it: for messages only.
    target: &'a Path,
    target_fd: BorrowedFd<'a>,
    restore_owner: bool,
    /// (device, inode) at backup time of multiply-linked files already
    /// restored → where restore made the first one.
    hard_links: HashMap<(u64, u64), FirstLink>,
    /// Chunks found to be all zeros → their length: a sparse file backed up
    /// as the same chunk of zeros thousands of times is read once and then
    /// only skipped over (a 1 TiB hole is 131,072 chunks of 8 MiB).
    zero_chunks: HashMap<Id, u64>,
    /// The last chunk's buffer, reused for the next one.
    buffer: Vec<u8>,
    outcome: RestoreOutcome,
}

/// The first link of a hard-linked file: its path relative to the target,
/// reopened from the target's descriptor for each further link, and the
/// (device, inode) restore created there, which it must still be.
struct FirstLink {
    rel: PathBuf,
    id: FileId,
}

impl Restorer<'_> {
    fn shown(&self, rel: &Path) -> PathBuf {
        self.target.join(rel)
    }

    fn error(&mut self, rel: &Path, e: Error) {
        let line = match e {
            // Already names the entry.
            Error::Io { .. } => e.to_string(),
            other => format!("{}: {other}", self.shown(rel).display()),
        };
        eprintln!("error: {line}");
        self.outcome.errors.push(line);
    }

    /// Restore the entries of a tree into `dir`. Failures are recorded and
    /// skipped, an unreadable tree included.
    fn restore_tree(&mut self, id: &Id, dir: BorrowedFd, rel: &Path) {
        let tree = match snapshot::load_tree(self.repo, id) {
            Ok(t) => t,
            Err(e) => return self.error(rel, e),
        };
        for node in &tree.nodes {
            let child = rel.join(OsStr::from_bytes(&node.name));
            self.restore_node(dir, node, &child);
        }
    }

    /// Restore `node` as `node.name` in `dir`; `rel` is its path in the
    /// target.
    fn restore_node(&mut self, dir: BorrowedFd, node: &Node, rel: &Path) {
        let result = match node.kind {
            NodeKind::Dir => self.restore_dir(dir, node, rel),
            NodeKind::File => self.restore_file(dir, node, rel),
            NodeKind::Symlink => self.restore_symlink(dir, node, rel),
            _ => self.restore_special(dir, node, rel),
        };
        if let Err(e) = result {
            self.error(rel, e);
        }
    }

    fn restore_dir(&mut self, dir: BorrowedFd, node: &Node, rel: &Path) -> Result<()> {
        let fd = target::open_or_make_dir(dir, &node.name).at(self.shown(rel))?;
        self.outcome.dirs += 1;
        if let Some(subtree) = node.subtree {
            self.restore_tree(&subtree, fd.as_fd(), rel);
        }
        self.apply(Handle::Open(fd.as_fd()), node, rel)
    }

    fn restore_file(&mut self, dir: BorrowedFd, node: &Node, rel: &Path) -> Result<()> {
        let shown = self.shown(rel);
        let name = &node.name[..];
        target::make_room(dir, name).at(&shown)?;
        let key = (node.device, node.inode);
        if node.links > 1 {
            if let Some(first) = self.hard_links.get(&key) {
                // The first link has the metadata already.
                target::link_beneath(self.target_fd, &first.rel, first.id, dir, name).at(&shown)?;
                self.outcome.files += 1;
                return Ok(());
            }
        }
        let file = target::create_file(dir, name).at(&shown)?;
        let id = target::file_id(&file).at(&shown)?;
        let length = match self.write_content(&file, &shown, &node.content) {
            Ok(n) => n,
            Err(e) => {
                // A half-written file looks like a good one to the next
                // program that reads it: remove it (if it is still ours);
                // the error names it.
                drop(file);
                if rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| (st.st_dev, st.st_ino) == id)
                {
                    let _ = rfs::unlinkat(dir, name, AtFlags::empty());
                }
                return Err(e);
            }
        };
        self.outcome.files += 1;
        self.outcome.bytes += length;
        if node.links > 1 {
            let rel = rel.to_path_buf();
            self.hard_links.insert(key, FirstLink { rel, id });
        }
        self.apply(Handle::Open(file.as_fd()), node, rel)
    }

    fn restore_symlink(&mut self, dir: BorrowedFd, node: &Node, rel: &Path) -> Result<()> {
        let shown = self.shown(rel);
        target::make_room(dir, &node.name).at(&shown)?;
        rfs::symlinkat(&node.link_target[..], dir, &node.name[..])
            .map_err(std::io::Error::from)
            .at(&shown)?;
        let fd = target::open_made(dir, &node.name, FileType::Symlink, 0).at(&shown)?;
        self.apply(Handle::Path(fd.as_fd()), node, rel)
    }

    fn restore_special(&mut self, dir: BorrowedFd, node: &Node, rel: &Path) -> Result<()> {
        let shown = self.shown(rel);
        target::make_room(dir, &node.name).at(&shown)?;
        metadata::make_special(dir, &node.name, node).at(&shown)?;
        let kind = FileType::from_raw_mode(node.kind.mode_bits());
        let fd = target::open_made(dir, &node.name, kind, node.rdev).at(&shown)?;
        self.apply(Handle::Path(fd.as_fd()), node, rel)
    }

    /// Metadata last, after contents: writing a file or a directory's
    /// entries would change the times it sets.
    fn apply(&self, handle: Handle, node: &Node, rel: &Path) -> Result<()> {
        let shown = self.shown(rel);
        metadata::apply(handle, node, self.restore_owner, &shown).at(&shown)
    }

    /// Write a file's chunks; returns its length.
    fn write_content(&mut self, file: &File, shown: &Path, chunks: &[Id]) -> Result<u64> {
        let mut offset = 0u64;
        for id in chunks {
            if let Some(&length) = self.zero_chunks.get(id) {
                offset += length;
                continue;
            }
            let data = self
                .repo
                .load_blob_into(id, std::mem::take(&mut self.buffer))?;
            self.outcome.chunks_read += 1;
            if data.iter().all(|&b| b == 0) {
                self.zero_chunks.insert(*id, data.len() as u64);
            } else {
                write_sparse(file, &data, offset).at(shown)?;
            }
            offset += data.len() as u64;
            self.buffer = data;
        }
        // Trailing holes: extend without writing.
        file.set_len(offset).at(shown)?;
        Ok(offset)
    }
}

/// Write `data` at `offset`, skipping block-aligned all-zero blocks so that
/// they stay holes in the new file.
fn write_sparse(file: &File, data: &[u8], offset: u64) -> std::io::Result<()> {
    let mut pos = 0;
    while pos < data.len() {
        // Align blocks to the file, not to the chunk.
        let file_pos = offset + pos as u64;
        let block_end = ((file_pos / HOLE_BLOCK as u64 + 1) * HOLE_BLOCK as u64 - offset) as usize;
        let end = block_end.min(data.len());
        let block = &data[pos..end];
        if block.iter().any(|&b| b != 0) {
            file.write_all_at(block, file_pos)?;
        }
        pos = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
