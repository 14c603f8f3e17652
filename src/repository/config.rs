//! The repository config: what every reader and writer must agree on.

use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;
use crate::error::Result;
use crate::id::Id;
use crate::repository::encoding;

pub const CONFIG_MAGIC: &[u8; 8] = b"SNAPFSCF";

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
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        encoding::encode(CONFIG_MAGIC, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Config> {
        let config: Config = encoding::decode(CONFIG_MAGIC, "config", bytes)?;
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
}
