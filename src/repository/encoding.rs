//! The envelope every repository file except packs is written in: an 8-byte
//! magic naming the record type, a little-endian u32 format version, then the
//! record in postcard. postcard is not self-describing, so the magic and
//! version are what lets a reader refuse bytes it cannot understand instead of
//! decoding garbage (docs/FORMAT.md, "Encoding").
//!
//! Decoders accept only the canonical encoding: the bytes postcard itself
//! writes for the decoded value. postcard's varint reader also takes
//! overlong forms (`f7 ff ff ff 00` for `f7 ff ff 7f`), so one record could
//! otherwise be written several ways: it would then have several ids, and a
//! record that decodes would not be the bytes it re-encodes to. Our writers
//! only ever produce canonical bytes, so the check refuses nothing we wrote.

use postcard::ser_flavors::Flavor;
use serde::{de::DeserializeOwned, Serialize};

use crate::error::{Error, Result};

/// The format version this build writes.
pub const FORMAT_VERSION: u32 = 1;

pub fn encode<T: Serialize>(magic: &[u8; 8], value: &T) -> Vec<u8> {
    encode_versioned(magic, FORMAT_VERSION, value)
}

/// `encode` with another version in the envelope (the config's is the
/// repository's layout version, see `config::LAYOUT_VERSION`).
pub fn encode_versioned<T: Serialize>(magic: &[u8; 8], version: u32, value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    // postcard only fails on types it cannot represent (none of ours) or on a
    // full fixed buffer (we write to a Vec), so a failure is a programming error.
    postcard::to_extend(value, out).expect("postcard encodes every snapfs record")
}

/// Check the envelope of `bytes` and return the record's version and body.
pub fn open_envelope<'a>(
    magic: &[u8; 8],
    object: &str,
    bytes: &'a [u8],
) -> Result<(u32, &'a [u8])> {
    open_envelope_upto(magic, object, bytes, FORMAT_VERSION)
}

/// `open_envelope` for a record whose versions go up to `newest`.
pub fn open_envelope_upto<'a>(
    magic: &[u8; 8],
    object: &str,
    bytes: &'a [u8],
    newest: u32,
) -> Result<(u32, &'a [u8])> {
    if bytes.len() < 12 {
        return Err(Error::corrupt(
            object,
            format!("only {} bytes long", bytes.len()),
        ));
    }
    if &bytes[..8] != magic {
        return Err(Error::corrupt(
            object,
            format!(
                "wrong magic (expected {:?})",
                String::from_utf8_lossy(magic)
            ),
        ));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version == 0 || version > newest {
        return Err(Error::Unsupported(format!(
            "{object} has format version {version}; this snapfs reads versions 1 to {newest}"
        )));
    }
    Ok((version, &bytes[12..]))
}

/// Decode a postcard record that must fill `body` exactly, in its
/// canonical encoding.
pub fn decode_body<T: DeserializeOwned + Serialize>(object: &str, body: &[u8]) -> Result<T> {
    let value = match postcard::take_from_bytes::<T>(body) {
        Ok((value, [])) => value,
        Ok((_, rest)) => {
            return Err(Error::corrupt(
                object,
                format!("{} trailing bytes", rest.len()),
            ))
        }
        Err(e) => return Err(Error::corrupt(object, format!("does not decode: {e}"))),
    };
    if !is_canonical(&value, body) {
        return Err(Error::corrupt(
            object,
            "is not in canonical encoding (an overlong number?)",
        ));
    }
    Ok(value)
}

/// Whether `value` encodes to exactly `bytes`. Compared while encoding,
/// without building the encoding: index files are megabytes.
fn is_canonical<T: Serialize>(value: &T, bytes: &[u8]) -> bool {
    postcard::serialize_with_flavor(value, Comparing { expected: bytes }).is_ok_and(|rest| rest)
}

/// A postcard output that checks each byte against the expected ones
/// instead of storing it; it fails at the first difference and ends
/// saying whether every expected byte was produced.
struct Comparing<'a> {
    expected: &'a [u8],
}

impl Flavor for Comparing<'_> {
    type Output = bool;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        match self.expected.strip_prefix(data) {
            Some(rest) => {
                self.expected = rest;
                Ok(())
            }
            None => Err(postcard::Error::SerializeBufferFull),
        }
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.try_extend(&[data])
    }

    fn finalize(self) -> postcard::Result<bool> {
        Ok(self.expected.is_empty())
    }
}

pub fn decode<T: DeserializeOwned + Serialize>(
    magic: &[u8; 8],
    object: &str,
    bytes: &[u8],
) -> Result<T> {
    let (_version, body) = open_envelope(magic, object, bytes)?;
    decode_body(object, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_wrong_magic_version_and_garbage() {
        let bytes = encode(b"SNAPFSXX", &(1u32, "a".to_string()));
        let ok: (u32, String) = decode(b"SNAPFSXX", "x", &bytes).unwrap();
        assert_eq!(ok, (1, "a".to_string()));
        assert!(matches!(
            decode::<(u32, String)>(b"SNAPFSYY", "x", &bytes),
            Err(Error::Corrupt { .. })
        ));
        let mut future = bytes.clone();
        future[8] = 99;
        assert!(matches!(
            decode::<(u32, String)>(b"SNAPFSXX", "x", &future),
            Err(Error::Unsupported(_))
        ));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(decode::<(u32, String)>(b"SNAPFSXX", "x", &trailing).is_err());
        assert!(decode::<(u32, String)>(b"SNAPFSXX", "x", &bytes[..5]).is_err());
    }

    #[test]
    fn rejects_overlong_varints() {
        // 0x0fffffff as a u32: canonical in 4 bytes, also decodable from 5.
        let canonical = encode(b"SNAPFSXX", &0x0fff_ffffu32);
        assert_eq!(canonical[12..], [0xff, 0xff, 0xff, 0x7f]);
        assert_eq!(
            decode::<u32>(b"SNAPFSXX", "x", &canonical).unwrap(),
            0x0fff_ffff
        );
        let mut overlong = canonical[..12].to_vec();
        overlong.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x00]);
        let err = decode::<u32>(b"SNAPFSXX", "x", &overlong).unwrap_err();
        assert!(err.to_string().contains("canonical"), "{err}");
        // Zero written as two bytes.
        let mut zero = canonical[..12].to_vec();
        zero.extend_from_slice(&[0x80, 0x00]);
        assert!(decode::<u32>(b"SNAPFSXX", "x", &zero).is_err());
    }
}
