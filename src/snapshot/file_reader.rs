//! Random access to a file in a snapshot.
//!
//! The chunk boundaries of a file are computed once, when it is opened, from
//! the index (no chunk is read for that); a read then binary-searches the
//! cumulative sizes for its first chunk and walks forward.

use std::sync::Arc;

use crate::buffer_pool::BufferPool;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::Repository;
use crate::snapshot::Node;

pub struct FileReader {
    chunks: Vec<Id>,
    /// `ends[i]` is the offset just past chunk `i`.
    ends: Vec<u64>,
}

impl FileReader {
    pub fn open(repo: &Repository, node: &Node) -> Result<FileReader> {
        let mut ends = Vec::with_capacity(node.content.len());
        let mut end = 0u64;
        for id in &node.content {
            end += repo.blob_size(id)?;
            ends.push(end);
        }
        if end != node.size {
            return Err(Error::corrupt(
                format!("file {}", String::from_utf8_lossy(&node.name)),
                format!("its chunks hold {end} bytes but its size is {}", node.size),
            ));
        }
        Ok(FileReader {
            chunks: node.content.clone(),
            ends,
        })
    }

    pub fn size(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// Chunk `i`'s id and its byte range in the file.
    pub fn chunk(&self, i: usize) -> (Id, u64, u64) {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        (self.chunks[i], start, self.ends[i])
    }

    /// The index of the chunk holding byte `offset`, if it is in the file.
    pub fn chunk_index_at(&self, offset: u64) -> Option<usize> {
        let i = self.ends.partition_point(|&end| end <= offset);
        (i < self.chunks.len()).then_some(i)
    }

    /// Up to `len` bytes at `offset`; fewer at the end of the file, none past
    /// it. `fetch` returns a chunk's verified content (from a cache, say),
    /// given its id and the length the index promises.
    pub fn read_at(
        &self,
        offset: u64,
        len: usize,
        fetch: impl FnMut(&Id, usize) -> Result<Arc<Vec<u8>>>,
    ) -> Result<Vec<u8>> {
        self.read_at_with(offset, len, fetch, &BufferPool::new(0, 0), <[u8]>::to_vec)
    }

    /// `read_at`, handing the bytes to `reply` instead of returning a copy:
    /// a read within one chunk borrows straight from the chunk; a read
    /// across chunks is gathered in a buffer from `buffers`, and the buffer
    /// given back once `reply` has seen it.
    pub fn read_at_with<R>(
        &self,
        offset: u64,
        len: usize,
        mut fetch: impl FnMut(&Id, usize) -> Result<Arc<Vec<u8>>>,
        buffers: &BufferPool,
        reply: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        let end = (offset.saturating_add(len as u64)).min(self.size());
        let Some(mut i) = self.chunk_index_at(offset) else {
            return Ok(reply(&[]));
        };
        let mut out = Vec::new();
        let mut pos = offset;
        while pos < end {
            let (id, start, chunk_end) = self.chunk(i);
            let data = fetch(&id, (chunk_end - start) as usize)?;
            if data.len() as u64 != chunk_end - start {
                return Err(Error::corrupt(
                    format!("data blob {id}"),
                    "has a different size than the index says",
                ));
            }
            let range = (pos - start) as usize..(end.min(chunk_end) - start) as usize;
            if pos == offset && end <= chunk_end {
                return Ok(reply(&data[range]));
            }
            pos = start + range.end as u64;
            if out.capacity() == 0 {
                out = buffers.take(len);
                out.reserve_exact((end - offset) as usize);
            }
            out.extend_from_slice(&data[range]);
            i += 1;
        }
        let replied = reply(&out);
        buffers.give(out);
        Ok(replied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(sizes: &[u64]) -> (FileReader, Vec<Vec<u8>>) {
        let mut chunks = Vec::new();
        let mut ends = Vec::new();
        let mut data = Vec::new();
        let mut end = 0;
        for (n, &size) in sizes.iter().enumerate() {
            let bytes: Vec<u8> = (0..size)
                .map(|i| (i as u8).wrapping_add(n as u8 * 31))
                .collect();
            chunks.push(Id::hash(&bytes));
            end += size;
            ends.push(end);
            data.push(bytes);
        }
        (FileReader { chunks, ends }, data)
    }

    fn fetcher(data: &[Vec<u8>]) -> impl FnMut(&Id, usize) -> Result<Arc<Vec<u8>>> + '_ {
        move |id, _| {
            Ok(Arc::new(
                data.iter().find(|d| Id::hash(d) == *id).unwrap().clone(),
            ))
        }
    }

    #[test]
    fn reads_span_chunks_and_stop_at_the_end() {
        let (r, data) = reader(&[10, 20, 5]);
        let whole: Vec<u8> = data.concat();
        assert_eq!(r.read_at(0, 100, fetcher(&data)).unwrap(), whole);
        assert_eq!(r.read_at(8, 5, fetcher(&data)).unwrap(), whole[8..13]);
        assert_eq!(r.read_at(29, 6, fetcher(&data)).unwrap(), whole[29..35]);
        assert_eq!(r.read_at(34, 10, fetcher(&data)).unwrap(), whole[34..35]);
        assert!(r.read_at(35, 10, fetcher(&data)).unwrap().is_empty());
        assert!(r.read_at(1000, 10, fetcher(&data)).unwrap().is_empty());
        assert!(r
            .read_at(u64::MAX - 1, 10, fetcher(&data))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn empty_file() {
        let (r, data) = reader(&[]);
        assert_eq!(r.size(), 0);
        assert!(r.read_at(0, 10, fetcher(&data)).unwrap().is_empty());
    }

    #[test]
    fn a_failed_fetch_is_the_read_error() {
        let (r, _) = reader(&[10]);
        let err = r
            .read_at(0, 5, |id, _| {
                Err(Error::corrupt(format!("data blob {id}"), "flipped"))
            })
            .unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }));
    }
}
