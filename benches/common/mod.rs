//! What the benches share: their settings from the environment, medians,
//! the page cache dropped, and the snapfs process serving a mount. Each
//! bench includes it with `#[path = "common/mod.rs"] mod common;`.

#![allow(dead_code)]

use std::path::Path;

/// The number in environment variable `name`, or `default`.
pub fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Drop the page cache (root only: a bench that needs it says so).
pub fn drop_caches() {
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3").expect("drop_caches (root)");
}

/// The pid of the snapfs process serving `mountpoint` (from /proc).
pub fn pid_serving(mountpoint: &Path) -> i32 {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        if args.first().is_some_and(|a| a.ends_with(b"snapfs"))
            && args.contains(&mountpoint.as_os_str().as_encoded_bytes())
        {
            return pid;
        }
    }
    panic!("no snapfs process serves {}", mountpoint.display());
}
