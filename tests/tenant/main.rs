//! The hostile-tenant suite: snapfs runs as root among accounts that
//! attack it. Each test plays a tenant against a real kernel, real
//! processes and real users (made with `useradd`, removed at the end).
//! A separate test binary because these need root, `useradd` and FUSE;
//! without them they skip with a message, unless `SNAPFS_REQUIRE_FUSE=1`
//! (CI), which makes that a failure.
//!
//! - `day_folders`: the day folders of 0700 and 0711 homes keep every other
//!   user out of the mount.
//! - `mount_links`: links planted at `~/admin` and `~/admin/backup` never
//!   move a mount or an unmount; a killed mount is cleared and mounted
//!   again by the unit's commands.
//! - `restore_race`: the tenant swaps folders of a restore target for
//!   symlinks to a root-owned folder while root restores into it 20 times;
//!   the root-owned folder stays byte-for-byte as it was.

mod day_folders;
mod mount_links;
mod restore_race;
mod support;
