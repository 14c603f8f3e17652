//! The hostile-tenant suite: snapfs runs as root among accounts that
//! attack it. Each test plays a tenant against a real kernel, real
//! processes and real users; they need root (and FUSE where they mount),
//! skip without, and fail instead under `SNAPFS_REQUIRE_FUSE=1` (CI).
//!
//! - `day_folders`: the day folders of 0700 and 0711 homes keep every other
//!   user out of the mount.
//! - `mount_links`: links planted at `~/admin` and `~/admin/backup` never
//!   move a mount or an unmount; a killed mount is cleared and mounted
//!   again by the unit's commands.

mod day_folders;
mod mount_links;
mod support;
