//! A few reusable byte buffers for the read path: compressed blobs on their
//! way to being decompressed, reads that span two chunks.
//!
//! Why not a fresh buffer per read: a megabyte is a fresh mapping, and
//! faulting its pages in cost the mount more system time than reading and
//! decompressing the data. Why not a buffer per thread: a mount has ten
//! reading threads, and ten buffers of the largest read each has seen would
//! hold tens of MiB for nothing, while only as many reads as there are cores
//! run at a time.

use std::sync::Mutex;

pub struct BufferPool {
    spare: Mutex<Vec<Vec<u8>>>,
    /// How many buffers are kept between uses.
    keep: usize,
    /// Buffers larger than this are not kept (one odd large blob).
    keep_bytes: usize,
}

impl BufferPool {
    pub fn new(keep: usize, keep_bytes: usize) -> BufferPool {
        BufferPool {
            spare: Mutex::new(Vec::new()),
            keep,
            keep_bytes,
        }
    }

    /// An empty buffer, with room for `len` bytes if a kept one has it.
    pub fn take(&self, len: usize) -> Vec<u8> {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        // The smallest that fits, else the largest (it grows in place).
        let best = spare
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .or_else(|| spare.iter().enumerate().max_by_key(|(_, b)| b.capacity()))
            .map(|(i, _)| i);
        best.map(|i| spare.swap_remove(i)).unwrap_or_default()
    }

    /// Keep `buffer` for a later `take`, if it is worth keeping.
    pub fn give(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() == 0 || buffer.capacity() > self.keep_bytes {
            return;
        }
        buffer.clear();
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() < self.keep {
            spare.push(buffer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_back_the_smallest_buffer_that_fits() {
        let pool = BufferPool::new(4, 1 << 20);
        assert_eq!(pool.take(10).capacity(), 0);
        for cap in [100, 1000, 500] {
            pool.give(Vec::with_capacity(cap));
        }
        assert!((500..1000).contains(&pool.take(400).capacity()));
        assert!(pool.take(2000).capacity() >= 1000, "else the largest");
        assert!(pool.take(1).capacity() >= 100);
        assert_eq!(pool.take(1).capacity(), 0, "empty again");
    }

    #[test]
    fn keeps_a_few_buffers_of_reasonable_size() {
        let pool = BufferPool::new(2, 1000);
        pool.give(Vec::with_capacity(1001));
        assert_eq!(pool.take(1).capacity(), 0);
        for _ in 0..5 {
            pool.give(Vec::with_capacity(64));
        }
        assert_eq!(pool.spare.lock().unwrap().len(), 2);
    }
}
