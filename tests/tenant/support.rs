//! What every tenant test needs.

use std::path::Path;

/// Whether a kernel mount can run here; panics instead of skipping when
/// `SNAPFS_REQUIRE_FUSE=1`.
pub fn fuse_available(test: &str) -> bool {
    let missing: Vec<&str> = ["/dev/fuse", "/usr/bin/fusermount3"]
        .into_iter()
        .filter(|path| !Path::new(path).exists())
        .collect();
    let root = unsafe { libc::geteuid() } == 0;
    if missing.is_empty() && root {
        return true;
    }
    let why = format!(
        "{test}: needs root, /dev/fuse and fusermount3; missing: {missing:?}, root: {root}"
    );
    if std::env::var("SNAPFS_REQUIRE_FUSE").as_deref() == Ok("1") {
        panic!("{why} (SNAPFS_REQUIRE_FUSE=1)");
    }
    eprintln!("skipping {why}");
    false
}
