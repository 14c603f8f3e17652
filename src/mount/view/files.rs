//! The read path: the chunk tables of the files being read, by inode;
//! chunks come from the view's [`ChunkSource`](crate::snapshot::chunk_source).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{lock, Inode, SnapshotFs, Warned};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::snapshot::file_reader::FileReader;

/// The largest read the kernel sends (FUSE's max_pages, 256 pages); larger
/// gathering buffers are not kept.
pub(super) const MAX_READ: usize = 1 << 20;
/// Memory for the chunk tables of files being read. Files are read by inode
/// number, not by handle (see `open_file`), so tables stay until evicted,
/// not until closed. Each costs about 250 bytes of its own (the struct, two
/// allocations, the cache's entry) plus 40 per chunk: a small file's about
/// 300 bytes, a 1 GiB file's 40 KiB. Counting only the 40 bytes per chunk
/// let `tar` over 100k small files keep 25 MiB of tables (measured).
pub(super) const READERS_BYTES: usize = 2 << 20;
const READER_BYTES: usize = 256;
const READER_CHUNK_BYTES: usize = std::mem::size_of::<Id>() + std::mem::size_of::<u64>();

/// A file being read: its chunk table, computed once.
pub(super) struct OpenFile {
    pub(super) reader: FileReader,
    /// Where the last read ended, to recognise sequential reading.
    pub(super) last_end: AtomicU64,
}

impl SnapshotFs {
    /// Check that `ino` is a file that can be read, and compute its chunk
    /// table now (kernels without zero-message opens call this per open).
    pub fn open(&self, ino: u64) -> Result<()> {
        self.open_file(ino).map(drop)
    }

    /// The chunk table of file `ino`, computed on its first read.
    ///
    /// Why by inode and not by open handle: the mount declines the kernel's
    /// OPEN requests, so the kernel stops sending OPEN and RELEASE (two of
    /// the four round trips per small file for `tar`, `cp -r`, `rsync` and
    /// `sftp get -r`), and reads carry only the inode number.
    pub(super) fn open_file(&self, ino: u64) -> Result<Arc<OpenFile>> {
        if let Some(file) = lock(&self.readers).get(&ino) {
            return Ok(file);
        }
        let Inode::Entry { tree, idx, .. } = self.inode(ino)? else {
            return Err(Error::Invalid(format!("inode {ino} is not a file")));
        };
        let (t, i) = self.entry_node(&tree, idx)?;
        let node = &t.nodes[i];
        if !node.is_file() {
            return Err(Error::Invalid(format!(
                "{} is not a file",
                String::from_utf8_lossy(&node.name)
            )));
        }
        let reader = FileReader::open(&self.repo, node).inspect_err(|e| {
            self.warn_once(Warned::File(ino), || format!("{}: {e}", self.path_of(ino)))
        })?;
        let weight = READER_BYTES + reader.chunk_count() * READER_CHUNK_BYTES;
        let file = Arc::new(OpenFile {
            reader,
            last_end: AtomicU64::new(0),
        });
        lock(&self.readers).put(ino, file.clone(), weight);
        Ok(file)
    }

    /// Up to `len` bytes at `offset` of file `ino`; fewer at the end.
    /// A chunk that cannot be read fails this read only (`Error::Corrupt`
    /// for damage), logged once per chunk.
    pub fn read_at(&self, ino: u64, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.read_at_with(ino, offset, len, |data| data.to_vec())
    }

    /// `read_at`, handing the bytes to `reply` without copying them when
    /// they lie in one chunk (most reads: the kernel asks for at most 1 MiB,
    /// chunks average 1 MiB).
    pub fn read_at_with<R>(
        &self,
        ino: u64,
        offset: u64,
        len: usize,
        reply: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        let file = self.open_file(ino)?;
        let fetch = |id: &Id, len: usize| {
            self.chunks.get(id, len).inspect_err(|e| {
                self.warn_once(Warned::Object(*id), || {
                    format!("{}: chunk {id}: {e}", self.path_of(ino))
                })
            })
        };
        let reader = &file.reader;
        let mut read_end = offset;
        let result = reader.read_at_with(offset, len, fetch, &self.span_buffers, |data| {
            read_end = offset + data.len() as u64;
            reply(data)
        })?;
        // Sequential enough: the kernel's parallel readahead requests arrive
        // slightly out of order.
        let last = file.last_end.swap(read_end, Ordering::Relaxed);
        if read_end > offset && last.abs_diff(offset) <= 4 << 20 {
            self.chunks.prefetch_after(reader, read_end);
        }
        Ok(result)
    }
}
