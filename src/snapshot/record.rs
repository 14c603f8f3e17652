//! The snapshot record and its versions: what one backup was, byte for
//! byte as docs/FORMAT.md section 5 gives it.
//!
//! Each version is a struct of its own whose fields, in order, are the
//! format; a newer one holds the older one as its first field, which
//! postcard encodes as nothing but that struct's fields, so a version is
//! the one before it plus what it appends (bupstash keeps old record
//! versions decodable the same way). [`Snapshot`] is what the rest of
//! snapfs works with, whatever version a file holds.

use chrono::{DateTime, FixedOffset, Local, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::tree::{Node, Timestamp};
use crate::error::Result;
use crate::id::Id;
use crate::repository::encoding;

pub const SNAPSHOT_MAGIC: &[u8; 8] = b"SNAPFSSN";

/// The snapshot record version this build writes, in the record's
/// envelope (trees, index files and packs keep `encoding::FORMAT_VERSION`):
/// - 1: `SnapshotV1`;
/// - 2: `SnapshotV2`: adds the backed-up folder's own metadata
///   ([`Snapshot::root`]; a mount shows a home that was 0700 as 0700, owned
///   by its user, instead of a folder anyone may list) and what each source
///   of a hosting account's snapshot gave ([`Snapshot::sources`]).
pub const SNAPSHOT_VERSION: u32 = 2;

/// One backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// When the backup started, UTC.
    pub time: Timestamp,
    /// The offset from UTC, in seconds, of the clock that took it.
    pub utc_offset: i32,
    pub hostname: String,
    /// The hosting account the snapshot belongs to.
    pub account: String,
    /// The source paths as given (absolute), as raw bytes.
    pub paths: Vec<Vec<u8>>,
    pub tags: Vec<String>,
    pub tree: Id,
    pub parent: Option<Id>,
    pub summary: Summary,
    /// Version 2: the metadata of the root folder (a `Node` with an empty
    /// name, kind `Dir` and no subtree): the backed-up folder's own, or for
    /// a hosting account's snapshot a folder of the account's user. `None`
    /// for several plain sources or one that was not a folder, and in
    /// every version-1 record.
    pub root: Option<Node>,
    /// Version 2: each source of a hosting account's snapshot (`snapfs
    /// run`) and what it gave; empty for `snapfs backup`.
    pub sources: Vec<SourceStatus>,
    /// The record version it was read from or will be written as: the
    /// envelope's version, not part of the record (as `Config::layout`).
    pub version: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub files: u64,
    pub dirs: u64,
    /// Files whose content was read (new or changed).
    pub files_read: u64,
    /// Files taken from the parent snapshot without reading them.
    pub files_unchanged: u64,
    /// Bytes of file content read from the source.
    pub bytes_read: u64,
    /// Total size of the files in the snapshot.
    pub bytes_total: u64,
    /// New, uncompressed bytes added to the repository.
    pub bytes_added: u64,
    /// The same bytes as stored (compressed).
    pub bytes_stored: u64,
    /// Entries that could not be read: the snapshot is partial if non-zero.
    pub errors: u64,
    pub duration_ms: u64,
}

/// What one source of a hosting account's snapshot gave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStatus {
    pub kind: SourceKind,
    /// The folder read (absolute path, raw bytes) or the database's name.
    pub name: Vec<u8>,
    /// Entries of a folder that could not be read (it is partial); 0 for
    /// a dump.
    pub unreadable: u64,
    /// Why the source is not in the snapshot at all (a dump that failed, a
    /// folder that could not be opened), in the tool's or system's words.
    pub failure: Option<String>,
}

/// The kind of a source, and the snapshot folder it fills. Append only:
/// the discriminant is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SourceKind {
    /// The account's home: `files/`.
    Files,
    /// Its maildirs: `mails/`.
    Mail,
    /// One PostgreSQL database: `postgresql/<db>.sql`.
    Postgresql,
    /// One MariaDB or MySQL database: `mysql/<db>.sql`.
    Mysql,
}

impl SourceKind {
    /// The folder of the snapshot's root it fills.
    pub fn folder(self) -> &'static str {
        match self {
            SourceKind::Files => "files",
            SourceKind::Mail => "mails",
            SourceKind::Postgresql => "postgresql",
            SourceKind::Mysql => "mysql",
        }
    }
}

/// A version-1 snapshot record. Field order is the format.
#[derive(Serialize, Deserialize)]
struct SnapshotV1 {
    time: Timestamp,
    utc_offset: i32,
    hostname: String,
    account: String,
    paths: Vec<Vec<u8>>,
    tags: Vec<String>,
    tree: Id,
    parent: Option<Id>,
    summary: Summary,
}

/// A version-2 snapshot record: version 1's fields, then these.
#[derive(Serialize, Deserialize)]
struct SnapshotV2 {
    v1: SnapshotV1,
    root: Option<Node>,
    sources: Vec<SourceStatus>,
}

impl Snapshot {
    /// Encoded as its `version`: a record read from version 1 writes back
    /// the same bytes (its id); one that needs version 2's fields is
    /// version 2.
    pub fn encode(&self) -> Vec<u8> {
        let v1 = self.to_v1();
        if self.version == 1 && self.root.is_none() && self.sources.is_empty() {
            return encoding::encode_versioned(SNAPSHOT_MAGIC, 1, &v1);
        }
        let v2 = SnapshotV2 {
            v1,
            root: self.root.clone(),
            sources: self.sources.clone(),
        };
        encoding::encode_versioned(SNAPSHOT_MAGIC, 2, &v2)
    }

    pub fn decode(name: &str, bytes: &[u8]) -> Result<Snapshot> {
        let object = format!("snapshot {name}");
        let (version, body) =
            encoding::open_envelope_upto(SNAPSHOT_MAGIC, &object, bytes, SNAPSHOT_VERSION)?;
        let (v1, root, sources) = match version {
            1 => (encoding::decode_body(&object, body)?, None, Vec::new()),
            _ => {
                let v2: SnapshotV2 = encoding::decode_body(&object, body)?;
                (v2.v1, v2.root, v2.sources)
            }
        };
        Ok(Snapshot::from_parts(v1, root, sources, version))
    }

    fn to_v1(&self) -> SnapshotV1 {
        SnapshotV1 {
            time: self.time,
            utc_offset: self.utc_offset,
            hostname: self.hostname.clone(),
            account: self.account.clone(),
            paths: self.paths.clone(),
            tags: self.tags.clone(),
            tree: self.tree,
            parent: self.parent,
            summary: self.summary.clone(),
        }
    }

    fn from_parts(
        v1: SnapshotV1,
        root: Option<Node>,
        sources: Vec<SourceStatus>,
        version: u32,
    ) -> Snapshot {
        Snapshot {
            time: v1.time,
            utc_offset: v1.utc_offset,
            hostname: v1.hostname,
            account: v1.account,
            paths: v1.paths,
            tags: v1.tags,
            tree: v1.tree,
            parent: v1.parent,
            summary: v1.summary,
            root,
            sources,
            version,
        }
    }

    pub fn utc(&self) -> DateTime<Utc> {
        Utc.timestamp_opt(self.time.secs, self.time.nanos)
            .single()
            .unwrap_or_default()
    }

    /// The time on the clock of the host that took it.
    pub fn taken_at(&self) -> DateTime<FixedOffset> {
        let offset = FixedOffset::east_opt(self.utc_offset)
            .unwrap_or(FixedOffset::east_opt(0).expect("0 is valid"));
        self.utc().with_timezone(&offset)
    }

    /// The day it belongs to in this host's time zone (or UTC).
    pub fn local_date(&self, utc: bool) -> NaiveDate {
        if utc {
            self.utc().date_naive()
        } else {
            self.utc().with_timezone(&Local).date_naive()
        }
    }

    pub fn paths_lossy(&self) -> Vec<String> {
        self.paths
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    }

    /// Sources that are missing from the snapshot or incomplete.
    pub fn partial_sources(&self) -> impl Iterator<Item = &SourceStatus> {
        self.sources
            .iter()
            .filter(|s| s.failure.is_some() || s.unreadable > 0)
    }
}
