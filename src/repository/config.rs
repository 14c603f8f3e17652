//! The repository config: what every reader and writer must agree on.

use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;
use crate::error::Result;
use crate::id::Id;
use crate::repository::encoding;

pub const CONFIG_MAGIC: &[u8; 8] = b"SNAPFSCF";

/// The repository layout this build creates, written as the version in the
/// config's envelope (the other files keep `encoding::FORMAT_VERSION`):
/// - 1: snapshot files directly in `snapshots/`;
/// - 2: each in the folder of its account, `snapshots/<folder>/<id>`, so
///   that one account's snapshots are found without reading everyone's.
///
/// Why the config carries it: every command reads the config first, so a
/// snapfs that knows only layout 1 refuses a layout-2 repository instead
/// of missing the snapshots in folders (its prune would free everything
/// they reference).
pub const LAYOUT_VERSION: u32 = 2;

pub const DEFAULT_PACK_SIZE: u32 = 16 * 1024 * 1024;
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Unique per repository (a hash of creation time, pid and an address),
    /// to tell repositories apart (replication, caches).
    pub id: Id,
    pub chunker: ChunkerParams,
    /// A pack is sealed once it holds at least this many bytes.
    pub pack_size: u32,
    pub zstd_level: i32,
    /// The retention policy `forget` applies when given none.
    pub retention: Retention,
    /// The layout version (`LAYOUT_VERSION`): the envelope's version, not
    /// part of the record.
    #[serde(skip)]
    pub layout: u32,
}

/// Which snapshots `forget` keeps; `None` means "this rule keeps nothing".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub keep_within_seconds: Option<u64>,
    pub keep_last: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
}

impl Retention {
    /// What a new repository starts with: 30 rolling days.
    pub fn thirty_days() -> Retention {
        Retention {
            keep_within_seconds: Some(30 * 24 * 3600),
            ..Retention::default()
        }
    }
}

impl Config {
    pub fn new(chunker: ChunkerParams) -> Config {
        // Unique enough without a random-number crate: time, pid and address
        // entropy hashed together.
        let seed = format!(
            "{:?} {} {:p}",
            std::time::SystemTime::now(),
            std::process::id(),
            &chunker
        );
        Config {
            id: Id::hash(seed.as_bytes()),
            chunker,
            pack_size: DEFAULT_PACK_SIZE,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            retention: Retention::thirty_days(),
            layout: LAYOUT_VERSION,
        }
    }

    /// Whether snapshot files live in a folder per account (layout 2).
    pub fn snapshot_folders(&self) -> bool {
        self.layout >= 2
    }

    pub fn encode(&self) -> Vec<u8> {
        encoding::encode_versioned(CONFIG_MAGIC, self.layout, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Config> {
        let (layout, body) =
            encoding::open_envelope_upto(CONFIG_MAGIC, "config", bytes, LAYOUT_VERSION)?;
        let mut config: Config = encoding::decode_body("config", body)?;
        config.layout = layout;
        config.chunker.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let config = Config::new(ChunkerParams::default());
        assert_eq!(Config::decode(&config.encode()).unwrap(), config);
    }

    #[test]
    fn the_layout_is_the_envelope_version() {
        let mut config = Config::new(ChunkerParams::default());
        assert_eq!(config.encode()[8..12], LAYOUT_VERSION.to_le_bytes());
        config.layout = 1;
        let old = Config::decode(&config.encode()).unwrap();
        assert_eq!(old.layout, 1);
        assert!(!old.snapshot_folders());
        let mut future = config.encode();
        future[8] = LAYOUT_VERSION as u8 + 1;
        assert!(matches!(
            Config::decode(&future),
            Err(crate::error::Error::Unsupported(_))
        ));
    }
}
