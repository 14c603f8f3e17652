//! Chunks concatenate back to the input and respect the maximum size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapfs::chunker::{Chunker, ChunkerParams};

fuzz_target!(|data: &[u8]| {
    let params = ChunkerParams { min_size: 64, avg_size: 256, max_size: 1024 };
    let mut chunker = Chunker::new(params);
    let mut chunks = chunker.chunks(data);
    let mut joined = Vec::new();
    while let Some(chunk) = chunks.next_chunk().unwrap() {
        assert!(!chunk.is_empty() && chunk.len() <= 1024);
        joined.extend_from_slice(chunk);
    }
    assert_eq!(joined, data);
});
