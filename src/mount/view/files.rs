//! The read path: chunk tables of the files being read, the chunk cache,
//! and the threads that fetch ahead of sequential readers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};

use super::{lock, Inode, SnapshotFs, Warned};
use crate::chunk_cache::ChunkCache;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::Repository;
use crate::snapshot::file_reader::FileReader;

/// How many chunks past a sequential read to fetch in the background.
const PREFETCH_AHEAD: usize = 8;
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
            self.chunks
                .get(id, len, |buffer| self.repo.load_blob_into(id, buffer))
                .inspect_err(|e| {
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
            self.prefetch_after(reader, read_end);
        }
        Ok(result)
    }

    fn prefetch_after(&self, reader: &FileReader, end: u64) {
        let Some(tx) = &self.prefetch else { return };
        let Some(first) = reader.chunk_index_at(end) else {
            return;
        };
        for i in first..(first + PREFETCH_AHEAD).min(reader.chunk_count()) {
            let (id, start, end) = reader.chunk(i);
            if self.chunks.peek(&id).is_some() {
                continue;
            }
            match tx.try_send((id, (end - start) as usize)) {
                Ok(()) | Err(TrySendError::Full(_)) => {}
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }
}

pub(super) fn spawn_prefetchers(
    repo: &Arc<Repository>,
    chunks: &Arc<ChunkCache>,
    threads: usize,
) -> Sender<(Id, usize)> {
    // Bounded: when readers outrun the prefetchers, dropping a prefetch is
    // better than queueing work whose reader has moved on.
    let (tx, rx) = crossbeam_channel::bounded::<(Id, usize)>(16);
    for n in 0..threads {
        let (repo, chunks, rx) = (repo.clone(), chunks.clone(), rx.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("prefetch-{n}"))
            .spawn(move || {
                for (id, len) in rx {
                    // Errors are the reader's to report, when it gets there.
                    let _ = chunks.get(&id, len, |buffer| repo.load_blob_into(&id, buffer));
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("no prefetch thread: {e}");
        }
    }
    tx
}

/// A thread that empties the chunk cache once it has been idle for `idle`,
/// checking a few times per period; it ends with the cache.
pub(super) fn spawn_idle_release(chunks: &Arc<ChunkCache>, idle: Duration) {
    let chunks = Arc::downgrade(chunks);
    let spawned = std::thread::Builder::new()
        .name("idle-release".into())
        .spawn(move || loop {
            std::thread::sleep(idle / 4);
            let Some(chunks) = chunks.upgrade() else {
                return;
            };
            let freed = chunks.release_if_idle(idle);
            if freed > 0 {
                tracing::debug!("idle for {idle:?}: released {freed} bytes of cached chunks");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("no idle-release thread: {e}");
    }
}
