//! Pack files: many compressed blobs in one file, with a header at the end
//! that lists them, so that a lost index can be rebuilt from the packs alone.
//!
//! ```text
//! offset 0      "SNAPFSPK"  u32 LE format version
//! offset 12     blob 0 bytes | blob 1 bytes | ...
//! header        postcard(PackHeader)
//! footer (48)   u32 LE header length | u32 LE format version |
//!               BLAKE3(header) [32] | "SNAPFSPK"
//! ```
//! A pack is named by the BLAKE3 of its whole content. This module does no
//! I/O: `PackBuilder` assembles a pack in memory and `repository::packer`
//! writes it.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::encoding::FORMAT_VERSION;

pub const PACK_MAGIC: &[u8; 8] = b"SNAPFSPK";
pub const LEAD_LEN: usize = 12;
pub const FOOTER_LEN: usize = 48;

/// What a blob holds. The discriminant is part of the format: append only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BlobKind {
    Data,
    Tree,
}

/// How a blob's bytes are stored. Append only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Compression {
    None,
    Zstd,
}

/// One blob's entry in a pack header and in index files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PackBlob {
    pub id: Id,
    pub kind: BlobKind,
    pub compression: Compression,
    /// Byte offset of the stored bytes from the start of the pack file.
    pub offset: u32,
    /// Stored (possibly compressed) length.
    pub length: u32,
    /// Length after decompression: the blob's real size.
    pub raw_length: u32,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackHeader {
    pub blobs: Vec<PackBlob>,
}

/// Assembles one pack in memory.
pub struct PackBuilder {
    bytes: Vec<u8>,
    blobs: Vec<PackBlob>,
}

impl Default for PackBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PackBuilder {
    pub fn new() -> PackBuilder {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(PACK_MAGIC);
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        PackBuilder {
            bytes,
            blobs: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }

    pub fn add(
        &mut self,
        id: Id,
        kind: BlobKind,
        compression: Compression,
        raw_length: u32,
        stored: &[u8],
    ) {
        let offset = u32::try_from(self.bytes.len()).expect("packs are sealed long before 4 GiB");
        self.bytes.extend_from_slice(stored);
        self.blobs.push(PackBlob {
            id,
            kind,
            compression,
            offset,
            length: stored.len() as u32,
            raw_length,
        });
    }

    /// Append header and footer. The header is parsed back from the finished
    /// bytes before they leave this function: a pack whose header we could not
    /// read again must never be written.
    pub fn finish(mut self) -> Result<(Id, Vec<u8>, Vec<PackBlob>)> {
        let header = postcard::to_stdvec(&PackHeader { blobs: self.blobs })
            .expect("postcard encodes pack headers");
        self.bytes.extend_from_slice(&header);
        self.bytes
            .extend_from_slice(&(header.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        self.bytes
            .extend_from_slice(blake3::hash(&header).as_bytes());
        self.bytes.extend_from_slice(PACK_MAGIC);
        let id = Id::hash(&self.bytes);
        let blobs = parse_pack(&id.to_hex(), &self.bytes)?;
        Ok((id, self.bytes, blobs))
    }
}

/// Parse the footer; returns the header's length and its BLAKE3 hash.
pub fn parse_footer(object: &str, footer: &[u8], file_len: u64) -> Result<(u32, [u8; 32])> {
    let bad = |reason: String| Error::corrupt(format!("pack {object}"), reason);
    if footer.len() != FOOTER_LEN || file_len < (LEAD_LEN + FOOTER_LEN) as u64 {
        return Err(bad(format!("too short for a pack ({file_len} bytes)")));
    }
    if &footer[40..48] != PACK_MAGIC {
        return Err(bad("footer has the wrong magic (truncated?)".into()));
    }
    let header_len = u32::from_le_bytes(footer[0..4].try_into().expect("4 bytes"));
    let version = u32::from_le_bytes(footer[4..8].try_into().expect("4 bytes"));
    if version == 0 || version > FORMAT_VERSION {
        return Err(Error::Unsupported(format!(
            "pack {object} has format version {version}; this snapfs reads 1 to {FORMAT_VERSION}"
        )));
    }
    if header_len as u64 > file_len - (LEAD_LEN + FOOTER_LEN) as u64 {
        return Err(bad(format!("header length {header_len} exceeds the file")));
    }
    let hash: [u8; 32] = footer[8..40].try_into().expect("32 bytes");
    Ok((header_len, hash))
}

/// Decode and validate a pack header read from a file of `file_len` bytes.
pub fn parse_header(
    object: &str,
    header: &[u8],
    hash: &[u8; 32],
    file_len: u64,
) -> Result<Vec<PackBlob>> {
    let bad = |reason: String| Error::corrupt(format!("pack {object}"), reason);
    if blake3::hash(header).as_bytes() != hash {
        return Err(bad("header checksum mismatch".into()));
    }
    let parsed: PackHeader = match postcard::take_from_bytes(header) {
        Ok((h, [])) => h,
        Ok(_) => return Err(bad("trailing bytes after the header".into())),
        Err(e) => return Err(bad(format!("header does not decode: {e}"))),
    };
    let data_end = file_len - FOOTER_LEN as u64 - header.len() as u64;
    for blob in &parsed.blobs {
        let end = blob.offset as u64 + blob.length as u64;
        if (blob.offset as usize) < LEAD_LEN || end > data_end {
            return Err(bad(format!(
                "blob {} lies outside the data area",
                blob.id.short()
            )));
        }
        if blob.compression == Compression::None && blob.length != blob.raw_length {
            return Err(bad(format!(
                "blob {} has inconsistent lengths",
                blob.id.short()
            )));
        }
    }
    Ok(parsed.blobs)
}

/// Parse a whole pack held in memory (check --read-data, tests, the packer).
pub fn parse_pack(object: &str, bytes: &[u8]) -> Result<Vec<PackBlob>> {
    let len = bytes.len() as u64;
    if bytes.len() < LEAD_LEN + FOOTER_LEN || &bytes[..8] != PACK_MAGIC {
        return Err(Error::corrupt(
            format!("pack {object}"),
            "does not start like a pack",
        ));
    }
    let footer = &bytes[bytes.len() - FOOTER_LEN..];
    let (header_len, hash) = parse_footer(object, footer, len)?;
    if bytes[8..12] != footer[4..8] {
        return Err(Error::corrupt(
            format!("pack {object}"),
            "lead and footer disagree on the version",
        ));
    }
    let header_end = bytes.len() - FOOTER_LEN;
    let header = &bytes[header_end - header_len as usize..header_end];
    parse_header(object, header, &hash, len)
}

/// Turn stored bytes back into the blob and verify its hash.
pub fn decode_blob(blob: &PackBlob, stored: &[u8]) -> Result<Vec<u8>> {
    let mut raw = Vec::new();
    match blob.compression {
        Compression::None => raw.extend_from_slice(stored),
        Compression::Zstd => decompress_into(blob, stored, &mut raw)?,
    }
    verify_blob(blob, &raw)?;
    Ok(raw)
}

/// Decompress a zstd blob into `out` (replacing its contents), reusing
/// `out`'s allocation and this thread's decompression context.
///
/// Why: a fresh context and a fresh output buffer per megabyte chunk are
/// fresh mappings, and faulting their pages in cost the mount more system
/// time than reading and decompressing the data.
pub fn decompress_into(blob: &PackBlob, stored: &[u8], out: &mut Vec<u8>) -> Result<()> {
    thread_local! {
        static CONTEXT: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { RefCell::new(None) };
    }
    let fail = |e: std::io::Error| {
        Error::corrupt(
            format!("{} blob {}", kind_name(blob.kind), blob.id),
            format!("does not decompress: {e}"),
        )
    };
    out.clear();
    // The promised length: a blob that inflates further is damage, not a
    // reason to allocate more.
    out.reserve_exact(blob.raw_length as usize);
    CONTEXT.with(|context| {
        let mut context = context.borrow_mut();
        let decompressor = match context.as_mut() {
            Some(d) => d,
            None => context.insert(zstd::bulk::Decompressor::new().map_err(fail)?),
        };
        // The destination's capacity bounds the output; a blob inflating
        // past raw_length within it fails verify_blob's length check.
        decompressor
            .decompress_to_buffer(stored, out)
            .map(|_| ())
            .map_err(fail)
    })
}

/// Check a decoded blob's length and hash.
pub fn verify_blob(blob: &PackBlob, raw: &[u8]) -> Result<()> {
    let object = || format!("{} blob {}", kind_name(blob.kind), blob.id);
    if raw.len() != blob.raw_length as usize {
        return Err(Error::corrupt(object(), "has the wrong length"));
    }
    if Id::hash(raw) != blob.id {
        return Err(Error::corrupt(object(), "content does not match its hash"));
    }
    Ok(())
}

/// Compress a blob when that makes it smaller.
pub fn encode_blob(raw: &[u8], level: i32) -> (Compression, Vec<u8>) {
    match zstd::bulk::compress(raw, level) {
        Ok(c) if c.len() < raw.len() => (Compression::Zstd, c),
        _ => (Compression::None, raw.to_vec()),
    }
}

pub fn kind_name(kind: BlobKind) -> &'static str {
    match kind {
        BlobKind::Data => "data",
        BlobKind::Tree => "tree",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_pack() -> (Id, Vec<u8>, Vec<PackBlob>, Vec<Vec<u8>>) {
        let raws = vec![b"hello".repeat(100), b"incompressible?".to_vec()];
        let mut builder = PackBuilder::new();
        for raw in &raws {
            let (compression, stored) = encode_blob(raw, 3);
            builder.add(
                Id::hash(raw),
                BlobKind::Data,
                compression,
                raw.len() as u32,
                &stored,
            );
        }
        let (id, bytes, blobs) = builder.finish().unwrap();
        (id, bytes, blobs, raws)
    }

    #[test]
    fn round_trip_and_compression_choice() {
        let (id, bytes, blobs, raws) = sample_pack();
        assert_eq!(id, Id::hash(&bytes));
        assert_eq!(blobs[0].compression, Compression::Zstd);
        assert_eq!(blobs[1].compression, Compression::None);
        for (blob, raw) in blobs.iter().zip(&raws) {
            let stored = &bytes[blob.offset as usize..(blob.offset + blob.length) as usize];
            assert_eq!(&decode_blob(blob, stored).unwrap(), raw);
        }
    }

    #[test]
    fn damage_is_reported_not_panicked() {
        let (_, bytes, blobs, _) = sample_pack();
        for cut in [0, 10, 60, bytes.len() - 1] {
            assert!(parse_pack("p", &bytes[..cut]).is_err());
        }
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x40;
            // Either the header check catches it, or the blob hash does.
            if let Ok(parsed) = parse_pack("p", &flipped) {
                let any_bad = parsed.iter().any(|b| {
                    let range = b.offset as usize..(b.offset + b.length) as usize;
                    decode_blob(b, &flipped[range]).is_err()
                });
                assert!(any_bad || parsed != blobs, "flip at {i} went unnoticed");
            }
        }
    }
}
