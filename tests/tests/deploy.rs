//! The deployment files as an operator's machine sees them: both systemd units pass
//! `systemd-analyze verify` (inside a scratch root holding stub binaries, since verify wants
//! `ExecStart=` to exist), their offline security exposure stays at or below 1.5, `install.sh`
//! is idempotent (two runs into the same root give the same tree), and the example config parses.
//! The Dockerfile and compose.yaml are checked without a Docker engine (none here, nor in CI):
//! stages, user, paths and commands against Cargo's binaries and the binaries themselves,
//! hadolint, and `docker compose config` (`SHTEST_HADOLINT`, `SHTEST_DOCKER_COMPOSE` from .ci/run;
//! without them those parts are skipped, loudly).
//!
//! systemd-analyze comes with Debian's systemd package. Without it these tests fail with what to
//! install, unless `SHTEST_SKIP_SYSTEMD=1` says to skip them (loudly).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use stockhook_tests::proc::stdout_of;

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
    // ExecReload=/bin/kill -HUP $MAINPID: verify checks that the command exists in the root.
    std::fs::create_dir_all(root.join("bin")).expect("mkdir bin");
    let kill = root.join("bin/kill");
    std::fs::write(&kill, "#!/bin/sh\n").expect("writing kill stub");
    std::fs::set_permissions(&kill, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod 755 kill stub");
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
    for want in [
        "etc/systemd/system/stockhook-receiver.service",
        "etc/stockhook/stockhook.toml",
    ] {
        assert!(
            first.keys().any(|k| k.ends_with(want)),
            "{want} not installed: {:?}",
            first.keys()
        );
    }
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

// --- Dockerfile and compose.yaml, checked without a Docker engine ------------------------------
//
// This machine (and CI) has the Docker client but no engine: the image is never built here. What
// can be checked is: the Dockerfile's stages, user, paths and commands against Cargo's binary
// names and the binaries' own subcommands and config loader; hadolint's lint; and compose.yaml as
// Docker Compose itself resolves it (`docker compose config`, which needs no engine).

/// The Dockerfile's instructions, in order: (stage index from 0, INSTRUCTION, its arguments),
/// continuation lines joined and comments dropped.
fn dockerfile() -> Vec<(usize, String, String)> {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).expect("reading Dockerfile");
    let mut out = Vec::new();
    let mut stage = 0usize;
    let mut seen_from = false;
    let mut pending = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head);
                pending.push(' ');
                continue;
            }
            None => pending.push_str(t),
        }
        let full = std::mem::take(&mut pending);
        let (word, args) = full.split_once(char::is_whitespace).unwrap_or((&full, ""));
        let word = word.to_ascii_uppercase();
        if word == "FROM" {
            if seen_from {
                stage += 1;
            }
            seen_from = true;
        }
        out.push((stage, word, args.trim().to_string()));
    }
    out
}

/// A JSON-array (exec form) argument as its strings.
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("not an exec-form array ({e}): {args}"))
}

/// The name Cargo gives `package`'s main binary (the `[[bin]]` built from `src/main.rs`; tools
/// in `src/bin/` are not shipped), from `cargo metadata`.
fn cargo_bin(package: &str) -> String {
    static META: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    let meta = META.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = stdout_of(
            Command::new(cargo)
                .args([
                    "metadata",
                    "--no-deps",
                    "--offline",
                    "--format-version",
                    "1",
                ])
                .current_dir(repo()),
            "cargo metadata",
        );
        serde_json::from_slice(&out).expect("cargo metadata's JSON")
    });
    let pkg = meta["packages"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == package))
        .unwrap_or_else(|| panic!("no package {package} in cargo metadata"));
    let mains: Vec<String> = pkg["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
        })
        .filter(|t| {
            t["src_path"]
                .as_str()
                .is_some_and(|p| p.ends_with("src/main.rs"))
        })
        .filter_map(|t| t["name"].as_str().map(String::from))
        .collect();
    assert_eq!(mains.len(), 1, "{package}'s main binaries: {mains:?}");
    mains[0].clone()
}

/// The real binary for a `/usr/local/bin/<name>` path in the image.
fn built(name: &str) -> &'static Path {
    match name {
        "stockhook-receiver" => stockhook_tests::bins::receiver(),
        "stockhook-worker" => stockhook_tests::bins::worker(),
        other => panic!("no binary {other} in the workspace"),
    }
}

/// `<bin> <args...> --help` exits 0: the binary takes that command line.
fn takes(bin: &str, args: &[String]) {
    stdout_of(
        Command::new(built(bin)).args(args).arg("--help"),
        &format!("`{bin} {} --help`", args.join(" ")),
    );
}

/// `stockhook-receiver check-config` with `env` (and a minimal config file): the loader the
/// binaries share accepts every variable; returns the config as it takes effect.
fn check_config_with(env: &[(String, String)]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = dir.path().join("stockhook.toml");
    std::fs::write(&cfg, "").expect("writing the config");
    let out = stdout_of(
        Command::new(stockhook_tests::bins::receiver())
            .arg("--config")
            .arg(&cfg)
            .arg("check-config")
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v))),
        &format!("check-config with {env:?}"),
    );
    String::from_utf8_lossy(&out).into_owned()
}

/// The port of `host:port`.
fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr}"))
}

/// The image path (`/usr/local/bin/<bin>`) of each binary, and the default command.
const IMAGE_BIN_DIR: &str = "/usr/local/bin/";
const IMAGE_CONFIG: &str = "/etc/stockhook/stockhook.toml";

#[test]
fn dockerfile_is_multi_stage_non_root_and_names_the_real_binaries() {
    let ins = dockerfile();
    let froms: Vec<&String> = ins
        .iter()
        .filter(|(_, w, _)| w == "FROM")
        .map(|(_, _, a)| a)
        .collect();
    assert!(froms.len() >= 2, "not multi-stage: {froms:?}");
    let build_stage = froms[0]
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .find(|w| w[0].eq_ignore_ascii_case("as"))
        .map(|w| w[1].to_string())
        .unwrap_or_else(|| panic!("the first stage has no name: {}", froms[0]));
    let last = ins.last().expect("instructions").0;
    let final_image = froms[last].split_whitespace().next().unwrap_or_default();
    assert!(
        final_image.contains("distroless") || final_image.contains("slim"),
        "the image runs on {final_image}, not distroless or Debian slim"
    );
    assert!(
        !final_image.contains("rust"),
        "the toolchain ships: {final_image}"
    );
    let in_final = |word: &str| -> Vec<String> {
        ins.iter()
            .filter(|(s, w, _)| *s == last && w == word)
            .map(|(_, _, a)| a.clone())
            .collect()
    };

    // Non-root, by number so a runtime can check it without the image's /etc/passwd.
    let users = in_final("USER");
    let user = users
        .last()
        .unwrap_or_else(|| panic!("no USER: the image runs as root"));
    let uid = user.split(':').next().unwrap_or_default();
    assert!(
        uid.parse::<u32>().is_ok_and(|n| n != 0),
        "USER {user}: not a non-root uid"
    );

    // The build compiles Cargo's binaries with the dist profile, and the image has each at
    // /usr/local/bin/<name>.
    let cargo_toml = std::fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml");
    assert!(
        cargo_toml.contains("\n[profile.dist]\n"),
        "no [profile.dist]"
    );
    let build_runs: Vec<&String> = ins
        .iter()
        .filter(|(s, w, _)| *s == 0 && w == "RUN")
        .map(|(_, _, a)| a)
        .collect();
    let build = build_runs
        .iter()
        .find(|a| a.contains("cargo build"))
        .expect("no cargo build in the first stage");
    assert!(
        build.contains("--profile dist") && build.contains("--locked"),
        "{build}"
    );
    let copies = in_final("COPY");
    let bin_copy = copies
        .iter()
        .find(|c| c.contains(&format!("--from={build_stage}")) && c.ends_with(IMAGE_BIN_DIR))
        .unwrap_or_else(|| {
            panic!("nothing copied from {build_stage} to {IMAGE_BIN_DIR}: {copies:?}")
        });
    let staged = bin_copy.split_whitespace().nth(1).unwrap_or_default();
    for package in ["stockhook-receiver", "stockhook-worker"] {
        let bin = cargo_bin(package);
        assert!(
            build.contains(&format!("-p {package}")),
            "{package} not built: {build}"
        );
        assert!(
            build.contains(&format!("target/dist/{bin}")),
            "the build does not install target/dist/{bin}: {build}"
        );
        assert!(
            build.contains(staged.trim_end_matches('/')),
            "the binaries are not installed where the image copies from ({staged}): {build}"
        );
    }

    // The default command is the receiver's, with the config path compose mounts.
    let cmd = exec_form(in_final("CMD").last().expect("no CMD"));
    let receiver = cargo_bin("stockhook-receiver");
    assert_eq!(cmd[0], format!("{IMAGE_BIN_DIR}{receiver}"), "{cmd:?}");
    assert_eq!(
        cmd[1..3],
        ["--config".to_string(), IMAGE_CONFIG.to_string()],
        "{cmd:?}"
    );
    takes(&receiver, &cmd[3..]);

    // Data directory: ENV, VOLUME and the nonroot-owned copy agree; the ENV is a valid setting.
    let env: Vec<(String, String)> = in_final("ENV")
        .iter()
        .flat_map(|a| {
            a.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        })
        .collect();
    let data_dir = env
        .iter()
        .find(|(k, _)| k == "STOCKHOOK_DATA_DIR")
        .map(|(_, v)| v.clone())
        .expect("no STOCKHOOK_DATA_DIR");
    let volume = exec_form(in_final("VOLUME").last().expect("no VOLUME"));
    assert_eq!(volume, std::slice::from_ref(&data_dir));
    assert!(
        copies
            .iter()
            .any(|c| c.contains(&format!("--chown={uid}")) && c.ends_with(&data_dir)),
        "{data_dir} is not owned by uid {uid}: {copies:?}"
    );
    let effective = check_config_with(&env);
    assert!(
        effective.contains(&format!("data_dir = \"{data_dir}\"")),
        "{effective}"
    );

    // What the image copies from the build context exists and is not .dockerignored.
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    for c in copies.iter().filter(|c| !c.starts_with("--")) {
        let parts: Vec<&str> = c.split_whitespace().collect();
        for src in &parts[..parts.len() - 1] {
            assert!(
                repo().join(src).exists(),
                "COPY {src}: not in the repository"
            );
            assert!(
                !ignore
                    .lines()
                    .any(|l| src.starts_with(l.trim_end_matches('/')) && !l.is_empty()),
                "COPY {src}: excluded by .dockerignore"
            );
        }
    }
    for must in ["target/", ".git/"] {
        assert!(
            ignore.lines().any(|l| l == must),
            ".dockerignore lacks {must}"
        );
    }

    // Every port the processes listen on by the image's defaults is exposed.
    let exposed: Vec<u16> = in_final("EXPOSE")
        .iter()
        .flat_map(|a| {
            a.split_whitespace()
                .map(|p| p.parse::<u16>().expect("EXPOSE port"))
                .collect::<Vec<_>>()
        })
        .collect();
    let listen = env
        .iter()
        .find(|(k, _)| k == "STOCKHOOK_RECEIVER_LISTEN")
        .map(|(_, v)| port_of(v))
        .expect("no STOCKHOOK_RECEIVER_LISTEN");
    assert!(
        exposed.contains(&listen),
        "{listen} not in EXPOSE {exposed:?}"
    );

    // hadolint, where it is installed (CI installs it: .ci/run).
    let hadolint = std::env::var("SHTEST_HADOLINT").unwrap_or_else(|_| "hadolint".into());
    match Command::new(&hadolint)
        .arg(repo().join("Dockerfile"))
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "hadolint Dockerfile:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => {
            assert!(
                std::env::var_os("SHTEST_HADOLINT").is_none(),
                "SHTEST_HADOLINT={hadolint} does not run: {e}"
            );
            eprintln!(
                "\n!!!!!!!! SKIPPED hadolint: not installed (.ci/run installs it) !!!!!!!!\n"
            );
        }
    }
}

/// `docker compose` (the plugin) or `docker-compose` (standalone), whichever runs `version`.
fn compose_command() -> Option<Vec<String>> {
    let candidates: Vec<Vec<String>> = match std::env::var("SHTEST_DOCKER_COMPOSE") {
        Ok(p) => vec![vec![p]],
        Err(_) => vec![
            vec!["docker-compose".into()],
            vec!["docker".into(), "compose".into()],
        ],
    };
    for c in candidates {
        let ok = Command::new(&c[0])
            .args(&c[1..])
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(c);
        }
    }
    assert!(
        std::env::var_os("SHTEST_DOCKER_COMPOSE").is_none(),
        "SHTEST_DOCKER_COMPOSE does not run `version`"
    );
    eprintln!("\n!!!!!!!! SKIPPED compose: no docker compose / docker-compose (.ci/run installs it) !!!!!!!!\n");
    None
}

#[test]
fn compose_services_run_the_right_commands_on_loopback_ports() {
    let Some(compose) = compose_command() else {
        return;
    };
    // As Compose resolves it, with the optional NATS profile and the defaults of its variables.
    let out = stdout_of(
        Command::new(&compose[0])
            .args(&compose[1..])
            .arg("-f")
            .arg(repo().join("compose.yaml"))
            .args(["--profile", "nats", "config", "--format", "json"])
            .env_remove("STOCKHOOK_QUEUE_BACKEND")
            .env_remove("BUILD_GIT_COMMIT"),
        "docker compose config",
    );
    let c: serde_json::Value = serde_json::from_slice(&out).expect("compose config's JSON");
    let services = &c["services"];

    // The ports the example config documents: listen, then [receiver] and [worker] metrics_listen.
    let example =
        std::fs::read_to_string(repo().join("deploy/stockhook.toml.example")).expect("example");
    let documented = |key: &str| -> Vec<u16> {
        example
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("# {key} = \"")))
            .map(|v| port_of(v.trim_end_matches('"')))
            .collect()
    };
    let (listens, metrics) = (documented("listen"), documented("metrics_listen"));
    assert!(metrics.len() >= 2, "{metrics:?}");
    let dockerfile_expose: Vec<u16> = dockerfile()
        .iter()
        .filter(|(_, w, _)| w == "EXPOSE")
        .flat_map(|(_, _, a)| {
            a.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<_>>()
        })
        .collect();
    let volume = exec_form(
        &dockerfile()
            .iter()
            .rev()
            .find(|(_, w, _)| w == "VOLUME")
            .expect("VOLUME")
            .2,
    );

    for (service, package, sub, listen_vars) in [
        (
            "receiver",
            "stockhook-receiver",
            "serve",
            vec![
                ("STOCKHOOK_RECEIVER_LISTEN", listens[0]),
                ("STOCKHOOK_RECEIVER_METRICS_LISTEN", metrics[0]),
            ],
        ),
        (
            "worker",
            "stockhook-worker",
            "run",
            vec![("STOCKHOOK_WORKER_METRICS_LISTEN", metrics[1])],
        ),
    ] {
        let s = &services[service];
        assert!(s.is_object(), "no service {service}");
        let cmd: Vec<String> = serde_json::from_value(s["command"].clone()).expect("command");
        let bin = cargo_bin(package);
        assert_eq!(
            cmd[0],
            format!("{IMAGE_BIN_DIR}{bin}"),
            "{service}: {cmd:?}"
        );
        assert_eq!(
            cmd[1..3],
            ["--config".to_string(), IMAGE_CONFIG.to_string()],
            "{cmd:?}"
        );
        assert_eq!(cmd[3..], [sub.to_string()], "{service}: {cmd:?}");
        takes(&bin, &cmd[3..]);

        // The config is mounted read-only where the command reads it; the data volume is where
        // the data dir is and where the image declares it.
        let env: Vec<(String, String)> = s["environment"]
            .as_object()
            .expect("environment")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("{service}: no {k}"))
        };
        let mounts = s["volumes"].as_array().expect("volumes");
        assert!(
            mounts
                .iter()
                .any(|m| m["target"] == IMAGE_CONFIG && m["read_only"] == true),
            "{service}: {IMAGE_CONFIG} not mounted read-only: {mounts:?}"
        );
        let data_dir = get("STOCKHOOK_DATA_DIR");
        assert_eq!(volume, std::slice::from_ref(&data_dir));
        assert!(
            mounts
                .iter()
                .any(|m| m["type"] == "volume" && m["target"] == data_dir.as_str()),
            "{service}: no volume at {data_dir}: {mounts:?}"
        );
        assert_eq!(s["read_only"], true, "{service}");

        // Its environment is valid for the config loader, on either queue backend.
        check_config_with(&env);
        let mut on_nats = env.clone();
        on_nats.retain(|(k, _)| k != "STOCKHOOK_QUEUE_BACKEND");
        on_nats.push(("STOCKHOOK_QUEUE_BACKEND".into(), "nats".into()));
        let effective = check_config_with(&on_nats);
        assert!(effective.contains("backend = \"nats\""), "{effective}");

        // Each listener's port is the example's, exposed by the image, and published on
        // loopback only.
        let ports = s["ports"].as_array().expect("ports");
        for (var, port) in listen_vars {
            assert_eq!(
                port_of(&get(var)),
                port,
                "{service}: {var} is not the example's port"
            );
            assert!(dockerfile_expose.contains(&port), "{port} not in EXPOSE");
            assert!(
                ports.iter().any(|p| p["target"] == port),
                "{service}: {port} not published: {ports:?}"
            );
        }
        for p in ports {
            assert_eq!(
                p["host_ip"], "127.0.0.1",
                "{service}: published beyond loopback: {p}"
            );
        }
    }

    // The NATS profile's server is the one the services' URL names, with JetStream.
    let nats = &services["nats"];
    let url = services["receiver"]["environment"]["STOCKHOOK_QUEUE_NATS_URL"]
        .as_str()
        .expect("STOCKHOOK_QUEUE_NATS_URL");
    assert_eq!(url, "nats://nats:4222");
    assert_eq!(nats["profiles"], serde_json::json!(["nats"]));
    let cmd: Vec<String> = serde_json::from_value(nats["command"].clone()).expect("nats command");
    assert!(
        cmd.iter().any(|a| a == "--jetstream" || a == "-js"),
        "{cmd:?}"
    );
}
