//! The Debian package, built as a release would be: `bash
//! packaging/build-deb.sh` (a release build, stripped) into a temporary
//! folder, then `lintian --fail-on error` on the .deb, and what an operator
//! expects to find in it.
//!
//! Its own test binary because the release build is slow (minutes on two
//! cores from cold; seconds when `target/release` is fresh). It needs
//! lintian and dpkg-dev (`tests/run.sh` installs them as root on Debian);
//! without them it skips with a message, unless `SNAPFS_REQUIRE_FUSE=1`
//! (set under CI), which turns a missing tool into a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

fn tools_present() -> bool {
    let missing: Vec<&str> = ["lintian", "dpkg-deb", "dpkg-shlibdeps", "strip"]
        .into_iter()
        .filter(|tool| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("SNAPFS_REQUIRE_FUSE").as_deref() == Ok("1") {
        panic!("missing {missing:?} (SNAPFS_REQUIRE_FUSE=1; tests/run.sh installs them)");
    }
    eprintln!("skipping the package test: missing {missing:?}");
    false
}

fn run(cmd: &mut Command) -> Output {
    let output = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        output.status.success(),
        "{cmd:?}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn build(out: &Path) -> PathBuf {
    let start = Instant::now();
    run(Command::new("bash")
        .arg("packaging/build-deb.sh")
        .arg(out)
        .current_dir(env!("CARGO_MANIFEST_DIR")));
    eprintln!("build-deb.sh: {:.1} s", start.elapsed().as_secs_f64());
    let debs: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    debs.into_iter().next().unwrap()
}

#[test]
fn the_package_has_what_an_operator_expects_and_lintian_finds_no_error() {
    if !tools_present() {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let deb = build(out.path());

    let contents = text(&run(Command::new("dpkg-deb").arg("-c").arg(&deb)));
    for path in [
        "./usr/bin/snapfs",
        "./usr/sbin/mount.snapfs",
        "./etc/snapfs/snapfs.toml",
        "./etc/default/snapfs",
        "./usr/lib/systemd/system/snapfs-run.service",
        "./usr/lib/systemd/system/snapfs-run.timer",
        "./usr/lib/systemd/system/snapfs-backup@.timer",
        "./usr/lib/systemd/system/snapfs-mount.service",
        "./usr/lib/systemd/system/snapfs-copy.timer",
        "./usr/share/man/man1/snapfs.1.gz",
        "./usr/share/man/man1/snapfs-backup.1.gz",
        "./usr/share/man/man1/snapfs-copy.1.gz",
        "./usr/share/man/man1/snapfs-mount.1.gz",
        "./usr/share/man/man8/mount.snapfs.8.gz",
        "./usr/share/bash-completion/completions/snapfs",
        "./usr/share/zsh/vendor-completions/_snapfs",
        "./usr/share/fish/vendor_completions.d/snapfs.fish",
        "./usr/share/doc/snapfs/copyright",
        "./usr/share/doc/snapfs/changelog.gz",
        "./usr/share/doc/snapfs/README.md.gz",
        "./usr/share/doc/snapfs/snapfs.toml",
    ] {
        assert!(
            contents.lines().any(|l| l.ends_with(path)),
            "{path} not in the package:\n{contents}"
        );
    }

    let field = |name: &str| text(&run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(name)));
    let depends = field("Depends");
    assert!(
        depends.contains("libc6 (>= ") && depends.contains("fuse3"),
        "{depends}"
    );
    assert!(field("Maintainer").contains("<snapfs@lists.snapfs.org>"));
    let control = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(control.path()));
    let conffiles = std::fs::read_to_string(control.path().join("conffiles")).unwrap();
    assert!(conffiles.lines().any(|l| l == "/etc/snapfs/snapfs.toml"));
    // The timer is shipped, not enabled: no maintainer script enables a
    // unit of its own accord.
    for script in ["postinst", "prerm", "postrm"] {
        let text = std::fs::read_to_string(control.path().join(script)).unwrap();
        assert!(!text.contains("#DEBHELPER#"), "{script}");
        assert!(
            !text.lines().any(|l| l.contains("systemctl enable")),
            "{script}"
        );
    }

    let start = Instant::now();
    // --fail-on error: warnings are reported (below) but pass.
    let lintian = Command::new("lintian")
        .args(["--fail-on", "error", "--tag-display-limit", "0"])
        .arg(&deb)
        .output()
        .unwrap();
    eprintln!(
        "lintian: {:.1} s\n{}{}",
        start.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&lintian.stdout),
        String::from_utf8_lossy(&lintian.stderr)
    );
    assert!(lintian.status.success(), "lintian found errors (above)");
}
