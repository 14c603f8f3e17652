//! snapfs: deduplicating daily backups that every hosting account browses,
//! read-only, as dated folders.
//!
//! # Layers
//!
//! Each layer uses only the ones below it:
//!
//! ```text
//! cli ─┬─ run (host: config, accounts)
//!      │    |
//!      ├─ backup restore check ls forget prune migrate copy mount (view → fuse)
//!      │      \        |       |    |    |      |      /
//!      │       snapshot (Snapshot records, Tree/Node, FileReader)
//!      │                |
//!      │       repository (Packer, Index, packs, config)   chunk_cache
//!      │                |
//!      └──────  repository::backend (whole, immutable files: local, s3)
//! ```
//!
//! - [`repository`] stores content-addressed blobs in pack files, keeps an
//!   index of where each blob is, and stores snapshot records as opaque
//!   content-addressed files. It knows nothing of files or trees.
//!   Where it is comes from a [`repository::Location`] (`--repo`: a folder,
//!   or `s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]`); the backend below
//!   stores and lists opaque names in a folder or a bucket, and keeps one
//!   contract (`repository::backend::contract`, docs/S3.md).
//! - [`snapshot`] gives those bytes meaning: a tree is a directory's entries,
//!   a snapshot names a root tree, a [`snapshot::file_reader::FileReader`]
//!   gives random access to a file's content.
//! - The commands ([`backup`], [`restore`], [`check`], [`ls`], [`forget`],
//!   [`prune`], [`migrate`], [`copy`], [`mount`]) are one module each,
//!   named like the command; [`copy`] reads one repository and writes
//!   another through its packer, in the backup's write order;
//!   [`retention`] is `forget`'s policy as a pure function.
//! - [`run`] is the nightly job of a hosting host: the accounts
//!   [`host::accounts`] selects from the configuration ([`host::config`]),
//!   `jobs` at a time under one lock and one index load, each into one
//!   snapshot of `files/`, `mails/` and database dumps
//!   (`backup::run_account`), with a report, an exit code and a metrics
//!   file.
//! - [`restore`] reaches its target only through descriptors, without
//!   following links ([`restore::target`]): it runs as root inside folders
//!   that tenants change while it runs.
//! - [`source`] is what a backup reads, beside `snapshot` under `backup`:
//!   a file system tree, reached through descriptors only
//!   ([`source::fs`]), because backups run as root over trees that their
//!   owners change meanwhile; and database dumps, a tool's output
//!   streamed in as one file ([`source::dump`]), for the databases that
//!   belong to an account ([`source::databases`]).
//!
//! # Backup data flow
//!
//! walker thread, one open folder per level: getdents → `fstatat` of the
//! name (no symlink followed) → `openat(O_NOFOLLOW)` from the folder's
//! descriptor → `fstat`, skipped if it is not what the `fstatat` saw → skip
//! if unchanged since the parent snapshot → `SEEK_DATA` extents (holes:
//! zero chunk ids, not read) → read → [`chunker`] → bounded queue → worker
//! threads: BLAKE3, dedup against the index, zstd, append to the open pack
//! → pack full: write atomically → every 64 packs and at the end: write an
//! index file → all durable: write the snapshot file.
//!
//! # Read data flow
//!
//! snapshot file → root tree → trees along the path → file node's chunk ids →
//! index lookup (pack, offset, length) → ranged read of the pack (past the
//! page cache for large blobs: `repository::backend::direct_read`) → zstd → BLAKE3
//! verified against the id → [`chunk_cache::ChunkCache`] (mount).
//!
//! # Mount data flow
//!
//! As root the mount point is resolved once, without following links, and
//! mounted on by descriptor; `snapfs unmount` unmounts only a snapfs mount,
//! reached the same way ([`mount::mountpoint`]): the path runs through
//! folders a tenant owns.
//!
//! kernel request → `fuser` worker thread (8) → [`mount::fuse`] translates →
//! [`mount::view::SnapshotFs`]: the top level (one account's days, or a
//! folder per account listed from the repository's account folders, each
//! account's records read on its first look; re-listed at most every 2 s,
//! `refresh_index` when new trees appear) →
//! trees loaded on first look into a folder and kept in a small cache →
//! inode numbers (a range per directory, on first sight, never reused) →
//! the first `read` of a file maps its chunk offsets once, kept by inode
//! number (the kernel opens files without asking the mount) → each `read`
//! binary-searches them → [`snapshot::chunk_source::ChunkSource`]:
//! [`chunk_cache::ChunkCache`] (shared fetch, byte budget, small chunks
//! capped at an eighth) ← background prefetch of the next chunks of a
//! sequential reader. A miss
//! evicts first and decodes into the evicted chunk's buffer; compressed
//! bytes and reads across two chunks use [`buffer_pool::BufferPool`]s, so
//! streaming a large file maps no new memory. A damaged chunk fails the
//! reads that need it (`EIO`), logged once ([`logging`]: syslog under
//! `mount --daemon`). POSIX ACLs are not presented; files with one show
//! narrowed modes ([`mount::acl`]).
//!
//! `mount --per-account --bind-homes` ([`mount::homes`]): before mounting,
//! clear what a killed daemon left; once serving, list the mount's root
//! every 2 s and bind each new account's folder into its home
//! ([`mount::bind`], by descriptors); at a stop, unbind, then unmount.
//!
//! # What may run together
//!
//! | running ↓ / starting → | backup | forget | prune     | ls/restore/mount | check |
//! |------------------------|--------|--------|-----------|------------------|-------|
//! | backup                 | yes    | yes    | waits     | yes              | yes¹  |
//! | forget                 | yes    | yes    | yes       | yes              | yes   |
//! | prune                  | waits  | yes    | waits     | yes²             | yes¹  |
//! | ls/restore/mount       | yes    | yes    | yes       | yes              | yes   |
//!
//! Writers never modify a file another process may read: packs, index files
//! and snapshots are immutable and written under a temporary name, then
//! renamed. Backups hold a shared lock and prune an exclusive one
//! ([`repository::lock`]); readers take none. `copy` runs like a backup on
//! the repository it writes and like `restore` on the one it reads. ¹ `check` may report a running
//! backup's or prune's packs as unreferenced. ² A reader whose blob was
//! moved by prune reloads the index and finds it. `migrate` runs like
//! prune (exclusive). The protocol is in docs/FORMAT.md.

pub mod backup;
pub mod buffer_pool;
pub mod check;
pub mod chunk_cache;
pub mod chunker;
pub mod cli;
pub mod copy;
pub mod display;
pub mod error;
pub mod forget;
pub mod host;
pub mod id;
pub mod logging;
pub mod ls;
pub mod metadata;
pub mod migrate;
pub mod mount;
pub mod nofollow;
pub mod progress;
pub mod prune;
pub mod repository;
pub mod restore;
pub mod retention;
pub mod run;
pub mod snapshot;
pub mod source;
pub mod weighted_lru;

pub use error::{Error, Result};
pub use id::Id;
