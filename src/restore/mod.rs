//! `snapfs restore`: write a snapshot (or a part of it) back to disk with its
//! metadata: modes, times, ownership (as root), symlinks, hard links, special
//! files, xattrs, and holes in sparse files.
//!
//! A damaged chunk fails the file that needs it, with a message; the rest of
//! the snapshot is still restored.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::id::Id;
use crate::metadata;
use crate::repository::Repository;
use crate::snapshot::{self, Node, NodeKind};

/// Zero runs of this many bytes (block-aligned) become holes.
const HOLE_BLOCK: usize = 4096;

#[derive(Debug, Default)]
pub struct RestoreOutcome {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    /// One line per entry that could not be restored.
    pub errors: Vec<String>,
}

pub fn run(repo: &Repository, root: &Id, subpath: &[u8], target: &Path) -> Result<RestoreOutcome> {
    let node = snapshot::resolve(repo, root, subpath)?;
    let mut restorer = Restorer {
        repo,
        restore_owner: unsafe { libc::geteuid() } == 0,
        hard_links: HashMap::new(),
        outcome: RestoreOutcome::default(),
    };
    fs::create_dir_all(target).at(target)?;
    if node.is_dir() {
        // The contents of a directory go into the target.
        let subtree = node
            .subtree
            .ok_or_else(|| Error::corrupt("directory", "has no tree"))?;
        restorer.restore_tree(&subtree, target)?;
        if !subpath.iter().all(|&b| b == b'/') {
            restorer.finish(target, &node);
        }
    } else {
        restorer.restore_node(&node, &target.join(std::ffi::OsStr::from_bytes(&node.name)))?;
    }
    Ok(restorer.outcome)
}

struct Restorer<'a> {
    repo: &'a Repository,
    restore_owner: bool,
    /// (device, inode) of multiply-linked files already restored → path.
    hard_links: HashMap<(u64, u64), PathBuf>,
    outcome: RestoreOutcome,
}

impl Restorer<'_> {
    fn error(&mut self, path: &Path, e: impl std::fmt::Display) {
        let line = format!("{}: {e}", path.display());
        eprintln!("error: {line}");
        self.outcome.errors.push(line);
    }

    /// Restore the entries of a tree into `dir`. Only an unreadable tree is
    /// returned as an error; entry failures are recorded and skipped.
    fn restore_tree(&mut self, id: &Id, dir: &Path) -> Result<()> {
        let tree = match snapshot::load_tree(self.repo, id) {
            Ok(t) => t,
            Err(e) => {
                self.error(dir, e);
                return Ok(());
            }
        };
        for node in &tree.nodes {
            let path = dir.join(std::ffi::OsStr::from_bytes(&node.name));
            self.restore_node(node, &path)?;
        }
        Ok(())
    }

    fn restore_node(&mut self, node: &Node, path: &Path) -> Result<()> {
        let created = match node.kind {
            NodeKind::Dir => {
                match fs::create_dir(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => {}
                    Err(e) => {
                        self.error(path, e);
                        return Ok(());
                    }
                }
                self.outcome.dirs += 1;
                if let Some(subtree) = node.subtree {
                    self.restore_tree(&subtree, path)?;
                }
                Ok(true)
            }
            NodeKind::File => self.restore_file(node, path),
            NodeKind::Symlink => {
                remove_existing(path);
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&node.link_target), path)
                    .at(path)
                    .map(|_| true)
            }
            _ => {
                remove_existing(path);
                metadata::make_special(path, node).map(|_| true)
            }
        };
        match created {
            Ok(true) => self.finish(path, node),
            Ok(false) => {}
            Err(e) => self.error(path, e),
        }
        Ok(())
    }

    /// Metadata last, after contents: writing a file or a directory's entries
    /// would change the times we just set.
    fn finish(&mut self, path: &Path, node: &Node) {
        if let Err(e) = metadata::apply(path, node, self.restore_owner) {
            self.error(path, e);
        }
    }

    /// Returns Ok(false) when the file was hard-linked to an earlier one,
    /// whose metadata is already right.
    fn restore_file(&mut self, node: &Node, path: &Path) -> Result<bool> {
        remove_existing(path);
        if node.links > 1 {
            if let Some(first) = self.hard_links.get(&(node.device, node.inode)) {
                fs::hard_link(first, path).at(path)?;
                self.outcome.files += 1;
                return Ok(false);
            }
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .at(path)?;
        let offset = match write_content(self.repo, &file, path, &node.content) {
            Ok(n) => n,
            Err(e) => {
                // A half-written file looks like a good one to the next
                // program that reads it: remove it; the error names it.
                drop(file);
                let _ = fs::remove_file(path);
                return Err(e);
            }
        };
        self.outcome.files += 1;
        self.outcome.bytes += offset;
        if node.links > 1 {
            self.hard_links
                .insert((node.device, node.inode), path.to_path_buf());
        }
        Ok(true)
    }
}

/// Write a file's chunks; returns its length.
fn write_content(repo: &Repository, file: &File, path: &Path, chunks: &[Id]) -> Result<u64> {
    let mut offset = 0u64;
    for id in chunks {
        let data = repo.load_blob(id)?;
        write_sparse(file, &data, offset).at(path)?;
        offset += data.len() as u64;
    }
    // Trailing holes: extend without writing.
    file.set_len(offset).at(path)?;
    Ok(offset)
}

fn remove_existing(path: &Path) {
    if fs::symlink_metadata(path).is_ok_and(|m| !m.is_dir()) {
        let _ = fs::remove_file(path);
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
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn zero_blocks_become_holes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse");
        let file = File::create(&path).unwrap();
        let mut data = vec![0u8; 1 << 20];
        data[10] = 1;
        write_sparse(&file, &data, 0).unwrap();
        file.set_len(data.len() as u64).unwrap();
        assert_eq!(fs::read(&path).unwrap(), data);
        let blocks = fs::metadata(&path).unwrap().blocks();
        assert!(blocks * 512 < 64 * 1024, "{blocks} blocks allocated");
    }
}
