//! Content identifiers: BLAKE3-256 of the bytes they name.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::error::{Error, Result};

/// The BLAKE3-256 hash of an object's (uncompressed) content. Chunks, trees,
/// packs, index files and snapshots are all named by one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct Id(pub [u8; 32]);

impl Id {
    pub fn hash(data: &[u8]) -> Id {
        Id(*blake3::hash(data).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// The first 8 hex digits, as shown by `snapshots` and in messages.
    pub fn short(&self) -> String {
        self.to_hex()[..8].to_string()
    }

    pub fn from_hex(s: &str) -> Result<Id> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(Error::Invalid(format!("{s:?} is not a 64-digit hex id")));
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let hi = hex_digit(pair[0]);
            let lo = hex_digit(pair[1]);
            match (hi, lo) {
                (Some(h), Some(l)) => out[i] = h << 4 | l,
                _ => return Err(Error::Invalid(format!("{s:?} is not a hex id"))),
            }
        }
        Ok(Id(out))
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = Id::hash(b"snapfs");
        assert_eq!(Id::from_hex(&id.to_hex()).unwrap(), id);
        assert_eq!(id.short().len(), 8);
    }

    #[test]
    fn rejects_bad_hex() {
        assert!(Id::from_hex("xyz").is_err());
        assert!(Id::from_hex(&"g".repeat(64)).is_err());
        assert!(Id::from_hex(&"A".repeat(64)).is_err());
    }
}
