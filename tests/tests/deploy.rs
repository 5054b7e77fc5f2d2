//! The deployment files as an operator's machine sees them: both systemd units pass
//! `systemd-analyze verify` (inside a scratch root holding stub binaries, since verify wants
//! `ExecStart=` to exist), their offline security exposure stays at or below 1.5, `install.sh`
//! is idempotent (two runs into the same root give the same tree), and the example config parses.
//!
//! systemd-analyze comes with Debian's systemd package. Without it these tests fail with what to
//! install, unless `SHTEST_SKIP_SYSTEMD=1` says to skip them (loudly).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// False (after saying so) when the tools are missing and skipping was asked for.
fn have_systemd_analyze() -> bool {
    let ok = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return true;
    }
    if std::env::var("SHTEST_SKIP_SYSTEMD").as_deref() == Ok("1") {
        eprintln!("SKIPPED: systemd-analyze is not installed (SHTEST_SKIP_SYSTEMD=1)");
        return false;
    }
    panic!("systemd-analyze is not installed: `apt-get install -y systemd` (or set SHTEST_SKIP_SYSTEMD=1 to skip)");
}

/// A scratch root with the host's unit library, stub binaries, and stockhook installed into it.
fn scratch_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("temp dir");
    let r = root.path();
    std::fs::create_dir_all(r.join("usr/lib/systemd")).expect("mkdir usr/lib/systemd");
    let cp = Command::new("cp")
        .args(["-r", "/usr/lib/systemd/system"])
        .arg(r.join("usr/lib/systemd/"))
        .status()
        .expect("running cp");
    assert!(cp.success(), "copying the host's unit library");
    write_stubs(r);
    install(r);
    root
}

/// Executable stand-ins for the two binaries under `root/stub/`.
fn write_stubs(root: &Path) {
    std::fs::create_dir_all(root.join("stub")).expect("mkdir stub");
    for bin in ["stockhook-receiver", "stockhook-worker"] {
        let p = root.join("stub").join(bin);
        std::fs::write(&p, "#!/bin/sh\n").expect("writing stub");
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod 755 stub");
    }
}

fn install(root: &Path) {
    let out = Command::new("bash")
        .arg(repo().join("deploy/install.sh"))
        .arg("--root")
        .arg(root)
        .arg("--bin-dir")
        .arg(root.join("stub"))
        .output()
        .expect("running deploy/install.sh");
    assert!(
        out.status.success(),
        "install.sh --root failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Path -> (mode, contents) of every file under `root` except the copied unit library.
fn tree(root: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .expect("under root")
                .display()
                .to_string();
            if rel.starts_with("usr/lib/systemd") {
                continue;
            }
            let m = e.metadata().expect("metadata");
            if m.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    rel,
                    (
                        m.permissions().mode(),
                        std::fs::read(&p).unwrap_or_default(),
                    ),
                );
            }
        }
    }
    out
}

#[test]
fn units_verify_in_a_scratch_root() {
    if !have_systemd_analyze() {
        return;
    }
    let root = scratch_root();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .args(["stockhook-receiver.service", "stockhook-worker.service"])
        .output()
        .expect("running systemd-analyze verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // verify exits 0 on warnings: any output is a finding.
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify:\n{text}"
    );
}

#[test]
fn security_exposure_stays_low() {
    if !have_systemd_analyze() {
        return;
    }
    for unit in ["stockhook-receiver.service", "stockhook-worker.service"] {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(repo().join("deploy").join(unit))
            .output()
            .expect("running systemd-analyze security");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("no exposure line for {unit}:\n{text}"));
        // "→ Overall exposure level for stockhook-receiver.service: 1.1 OK 🙂"
        let score: f64 = line
            .rsplit(':')
            .next()
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
        assert!(
            score <= 1.5,
            "{unit}: exposure {score} is above 1.5 (the README records 1.1)"
        );
    }
}

#[test]
fn install_is_idempotent() {
    let root = tempfile::tempdir().expect("temp dir");
    let r = root.path();
    write_stubs(r);
    install(r);
    let first = tree(r);
    assert!(
        first
            .keys()
            .any(|k| k.ends_with("etc/systemd/system/stockhook-receiver.service")),
        "{:?}",
        first.keys()
    );
    assert!(
        first
            .keys()
            .any(|k| k.ends_with("etc/stockhook/stockhook.toml")),
        "{:?}",
        first.keys()
    );
    // The operator's config is never overwritten.
    let cfg = first
        .keys()
        .find(|k| k.ends_with("etc/stockhook/stockhook.toml"))
        .cloned()
        .expect("config");
    std::fs::write(r.join(&cfg), "# edited by the operator\n").expect("edit config");
    install(r);
    let second = tree(r);
    assert_eq!(
        second.get(&cfg).map(|(_, c)| c.as_slice()),
        Some(&b"# edited by the operator\n"[..])
    );
    let mut expected = first.clone();
    expected.insert(cfg.clone(), second[&cfg].clone());
    assert_eq!(second, expected, "a second install changed files");
}
