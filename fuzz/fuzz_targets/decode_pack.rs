//! Pack parsing and blob decoding on arbitrary bytes: errors, never panics,
//! and every accepted blob lies inside the file and matches its hash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapfs::repository::pack::{decode_blob, parse_pack};
use snapfs::Id;

fuzz_target!(|data: &[u8]| {
    if let Ok(blobs) = parse_pack("fuzz", data) {
        for blob in blobs {
            let range = blob.offset as usize..(blob.offset as usize + blob.length as usize);
            let stored = &data[range];
            if let Ok(raw) = decode_blob(&blob, stored) {
                assert_eq!(Id::hash(&raw), blob.id);
            }
        }
    }
});
