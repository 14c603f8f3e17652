use crate::support::*;
use std::fs;
use std::process::Command;

#[test]
fn concurrent_backups_lose_nothing() {
    let t = TestRepo::new();
    let mut sources = Vec::new();
    for n in 0..4u64 {
        let src = t.path(&format!("account{n}"));
        fs::create_dir_all(&src).unwrap();
        // Shared content across accounts, plus each account's own.
        fs::write(src.join("shared"), random_bytes(100_000, 7)).unwrap();
        for f in 0..10 {
            fs::write(
                src.join(format!("own-{f}")),
                random_bytes(20_000, n * 1000 + f),
            )
            .unwrap();
        }
        sources.push(src);
    }
    for round in 0..2 {
        let handles: Vec<_> = sources
            .iter()
            .enumerate()
            .map(|(n, src)| {
                let repo = t.repo.clone();
                let src = src.clone();
                std::thread::spawn(move || {
                    Command::new(BIN)
                        .args([
                            "backup",
                            "--account",
                            &format!("acct{n}"),
                            src.to_str().unwrap(),
                        ])
                        .env("SNAPFS_REPO", &repo)
                        .output()
                        .unwrap()
                })
            })
            .collect();
        for h in handles {
            let out = h.join().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    assert_eq!(t.snapshots().len(), 8);
    assert_eq!(t.run(&["check", "--read-data"]).status.code(), Some(0));
    for (n, src) in sources.iter().enumerate() {
        let out = t.run(&[
            "restore",
            "latest",
            "--account",
            &format!("acct{n}"),
            "--target",
            t.path(&format!("out{n}")).to_str().unwrap(),
        ]);
        assert!(out.status.success());
        assert_same_tree(src, &t.path(&format!("out{n}")));
    }
}
