//! snapfs as root among hostile tenants: a real unprivileged user (made
//! with `useradd`, removed at the end) runs a racer process that changes
//! its own files while root backs them up or restores them.
//!
//! A separate test binary because these need root and `useradd`; without
//! them they skip with a message, unless `SNAPFS_REQUIRE_FUSE=1` (CI),
//! which makes that a failure.
//!
//! - `restore_race`: the tenant swaps folders of a restore target for
//!   symlinks to a root-owned folder while root restores into it 20 times;
//!   the root-owned folder stays byte-for-byte as it was.

mod restore_race;
