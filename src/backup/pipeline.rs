//! The chunk pipeline of a backup: the walker cuts content into chunks and
//! queues them; worker threads hash, compress and pack them; the walker
//! keeps one slot per chunk and collects the ids in order when it stores
//! the directory's tree.

use crossbeam_channel::{bounded, Receiver, Sender};
use std::io::{self, Read};

use crate::chunker::Chunker;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::progress::Progress;
use crate::repository::pack::BlobKind;
use crate::repository::Packer;
use crate::snapshot::Node;

/// One chunk on its way to a worker, and where to put its id.
pub(super) struct ChunkJob {
    data: Vec<u8>,
    result: Sender<Result<Id>>,
}

pub(super) fn worker(jobs: Receiver<ChunkJob>, packer: &Packer) {
    for job in jobs {
        let result = packer.add(BlobKind::Data, &job.data).map(|(id, _)| id);
        // The walker may have given up on this file; nobody is listening then.
        let _ = job.result.send(result);
    }
}

/// A chunk id, known now (a hole's zero chunk, or copied from the parent)
/// or still in a worker's hands.
pub(super) enum PendingChunk {
    Ready(Id),
    Sent(Receiver<Result<Id>>),
}

impl PendingChunk {
    pub(super) fn wait(self) -> Result<Id> {
        match self {
            PendingChunk::Ready(id) => Ok(id),
            PendingChunk::Sent(rx) => rx
                .recv()
                .map_err(|_| Error::Invalid("backup worker stopped unexpectedly".into()))?,
        }
    }
}

/// A file whose chunks may still be in the workers' hands.
pub(super) struct PendingFile {
    pub node: Node,
    pub chunks: Vec<PendingChunk>,
}

pub(super) enum Entry {
    Done(Node),
    Pending(PendingFile),
}

impl Entry {
    /// The finished node, once all its chunks are stored.
    pub(super) fn wait(self) -> Result<Node> {
        match self {
            Entry::Done(node) => Ok(node),
            Entry::Pending(PendingFile { mut node, chunks }) => {
                node.content.reserve(chunks.len());
                for chunk in chunks {
                    node.content.push(chunk.wait()?);
                }
                Ok(node)
            }
        }
    }
}

pub(super) enum ChunkError {
    /// Reading the source failed after `read` bytes of this stream.
    Read { read: u64, error: io::Error },
    /// The workers are gone: the backup cannot continue.
    Stopped,
}

/// Cut `reader` into chunks and queue them; returns the bytes read.
pub(super) fn send_chunks(
    chunker: &mut Chunker,
    jobs: &Sender<ChunkJob>,
    progress: &Progress,
    reader: impl Read,
    out: &mut Vec<PendingChunk>,
) -> std::result::Result<u64, ChunkError> {
    let mut read = 0u64;
    let mut stream = chunker.chunks(reader);
    loop {
        let chunk = match stream.next_chunk() {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(read),
            Err(error) => return Err(ChunkError::Read { read, error }),
        };
        read += chunk.len() as u64;
        progress.bytes(chunk.len() as u64);
        let (tx, rx) = bounded(1);
        let job = ChunkJob {
            data: chunk.to_vec(),
            result: tx,
        };
        if jobs.send(job).is_err() {
            return Err(ChunkError::Stopped);
        }
        out.push(PendingChunk::Sent(rx));
    }
}

/// The chunks that stand for holes: a hole of a sparse file is stored as
/// zero chunks of the maximum chunk size plus one shorter remainder, so the
/// content is still a list of chunks that concatenate to the file (the
/// format does not change) and no byte of the hole is read. Each length is
/// hashed and stored once per backup; after that only its id is repeated:
/// a 1 TiB hole is 131,072 copies of one id.
pub(super) struct ZeroChunks {
    max: usize,
    zeros: Vec<u8>,
    ids: std::collections::HashMap<usize, Id>,
}

/// Remainders have any length, so a backup of many sparse files meets many;
/// past this many the cache starts over rather than grow.
const ZERO_IDS_KEPT: usize = 4096;

impl ZeroChunks {
    pub(super) fn new(max_chunk: u32) -> ZeroChunks {
        ZeroChunks {
            max: max_chunk as usize,
            zeros: Vec::new(),
            ids: Default::default(),
        }
    }

    /// Append the chunks of a hole of `len` bytes to `out`.
    pub(super) fn push(
        &mut self,
        packer: &Packer,
        len: u64,
        out: &mut Vec<PendingChunk>,
    ) -> Result<()> {
        let max = self.max as u64;
        let (full, rest) = (len / max, (len % max) as usize);
        if full > 0 {
            let id = self.id(packer, self.max)?;
            let full = usize::try_from(full).expect("a hole's chunk count fits in memory");
            out.extend(std::iter::repeat_with(|| PendingChunk::Ready(id)).take(full));
        }
        if rest > 0 {
            out.push(PendingChunk::Ready(self.id(packer, rest)?));
        }
        Ok(())
    }

    fn id(&mut self, packer: &Packer, len: usize) -> Result<Id> {
        if let Some(id) = self.ids.get(&len) {
            return Ok(*id);
        }
        if self.zeros.is_empty() {
            // calloc'd: the pages stay the shared zero page until read.
            self.zeros = vec![0; self.max];
        }
        let (id, _) = packer.add(BlobKind::Data, &self.zeros[..len])?;
        if self.ids.len() >= ZERO_IDS_KEPT {
            self.ids.clear();
        }
        self.ids.insert(len, id);
        Ok(id)
    }
}
