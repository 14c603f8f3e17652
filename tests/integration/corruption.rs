//! Damaged repositories: one generator per kind of damage. `check` must name
//! the damaged object and who needs it; undamaged snapshots keep restoring;
//! nothing panics (a panic exits with 101).

use crate::support::*;
use std::fs;
use std::path::PathBuf;

/// Two accounts' snapshots in one repository: alice's will be damaged,
/// bob's shares no data with it and must keep working.
struct Damaged {
    t: TestRepo,
    alice: String,
    bob: String,
    bob_source: PathBuf,
}

fn setup() -> Damaged {
    let t = TestRepo::new();
    let a = t.path("alice");
    let b = t.path("bob");
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    fs::write(a.join("data.bin"), random_bytes(50_000, 1)).unwrap();
    // bob's snapshot is written first, so that its packs come first too.
    fs::write(b.join("mail"), random_bytes(30_000, 2)).unwrap();
    let bob = t.ok(&["backup", "--json", "--account", "bob", b.to_str().unwrap()]);
    let bob: serde_json::Value = serde_json::from_str(&bob).unwrap();
    let alice = t.ok(&[
        "backup",
        "--json",
        "--account",
        "alice",
        a.to_str().unwrap(),
    ]);
    let alice: serde_json::Value = serde_json::from_str(&alice).unwrap();
    Damaged {
        t,
        alice: alice["id"].as_str().unwrap().to_string(),
        bob: bob["id"].as_str().unwrap().to_string(),
        bob_source: b,
    }
}

impl Damaged {
    /// Packs written by alice's backup (newer than bob's last pack).
    fn alice_packs(&self) -> Vec<PathBuf> {
        let mut packs: Vec<_> = self
            .t
            .pack_files()
            .into_iter()
            .map(|p| (fs::metadata(&p).unwrap().modified().unwrap(), p))
            .collect();
        packs.sort();
        let ls = self.t.ok(&["check", "--json"]);
        assert!(ls.contains("\"damage\": []"));
        // Bob's backup wrote 30 KB in one pack or two; alice's 50 KB after.
        packs.into_iter().rev().take(1).map(|(_, p)| p).collect()
    }

    fn bob_still_restores(&self) {
        let out = self.t.run(&[
            "restore",
            &self.bob,
            "--target",
            self.t.path("bob-out").to_str().unwrap(),
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            fs::read(self.t.path("bob-out/mail")).unwrap(),
            fs::read(self.bob_source.join("mail")).unwrap()
        );
        let _ = fs::remove_dir_all(self.t.path("bob-out"));
    }

    fn check(&self, read_data: bool) -> (i32, String) {
        let mut args = vec!["check"];
        if read_data {
            args.push("--read-data");
        }
        let out = self.t.run(&args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_ne!(out.status.code(), Some(101), "panicked: {text}");
        (out.status.code().unwrap(), text)
    }
}

#[test]
fn flipped_byte_in_a_data_chunk() {
    let d = setup();
    let pack = d.alice_packs().remove(0);
    let mut bytes = fs::read(&pack).unwrap();
    bytes[100] ^= 0xff; // inside the first blob's data
    fs::write(&pack, bytes).unwrap();
    let (code, text) = d.check(true);
    assert_eq!(code, 4, "{text}");
    assert!(text.contains("damaged: data blob"), "{text}");
    assert!(
        text.contains(&format!("needed by {}:/data.bin", &d.alice[..8])),
        "{text}"
    );
    d.bob_still_restores();
    // Restoring the damaged snapshot restores what it can and says what failed.
    let out = d.t.run(&[
        "restore",
        &d.alice,
        "--target",
        d.t.path("a-out").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("data.bin"));
    // No half-written file that looks like a good one.
    assert!(!d.t.path("a-out/data.bin").exists());
}

#[test]
fn truncated_pack() {
    let d = setup();
    let pack = d.alice_packs().remove(0);
    let len = fs::metadata(&pack).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let (code, text) = d.check(false);
    assert_eq!(code, 4, "{text}");
    assert!(
        text.contains(&format!(
            "pack {}",
            pack.file_name().unwrap().to_string_lossy()
        )),
        "{text}"
    );
    assert!(text.contains(&d.alice[..8]), "{text}");
    d.bob_still_restores();
    let out = d.t.run(&["ls", &d.bob]);
    assert!(out.status.success());
}

#[test]
fn missing_pack() {
    let d = setup();
    let pack = d.alice_packs().remove(0);
    fs::remove_file(&pack).unwrap();
    let (code, text) = d.check(false);
    assert_eq!(code, 4, "{text}");
    assert!(text.contains("missing"), "{text}");
    assert!(text.contains(&d.alice[..8]), "{text}");
    d.bob_still_restores();
}

#[test]
fn missing_index_files_are_reported_and_reads_still_work() {
    let d = setup();
    for f in fs::read_dir(d.t.repo.join("index")).unwrap() {
        fs::remove_file(f.unwrap().path()).unwrap();
    }
    let (code, text) = d.check(false);
    assert_eq!(code, 4, "{text}");
    assert!(text.contains("missing from the index"), "{text}");
    // Reads fall back to the pack headers.
    d.bob_still_restores();
}

#[test]
fn garbage_snapshot_and_index_files() {
    let d = setup();
    let garbage_snapshot = "0".repeat(64);
    fs::write(
        d.t.repo.join("snapshots").join(&garbage_snapshot),
        b"garbage",
    )
    .unwrap();
    let garbage_index = "1".repeat(64);
    fs::write(d.t.repo.join("index").join(&garbage_index), b"\x00\x01\x02").unwrap();
    let out = d.t.run(&["snapshots"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 snapshots"));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&garbage_snapshot));
    let (code, text) = d.check(false);
    assert_eq!(code, 4, "{text}");
    assert!(
        text.contains(&format!("snapshot {garbage_snapshot}")),
        "{text}"
    );
    assert!(text.contains(&format!("index {garbage_index}")), "{text}");
    d.bob_still_restores();
}

#[test]
fn corrupt_config_is_a_clear_error() {
    let d = setup();
    fs::write(d.t.repo.join("config"), b"SNAPFSCF\x01\x00\x00\x00garbage").unwrap();
    let out = d.t.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("config is damaged"));
}
