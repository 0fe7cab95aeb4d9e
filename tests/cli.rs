//! The `pushgate` binary itself: `gen-vapid`, and `serve` with its request logs.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_pushgate");

#[test]
fn gen_vapid_writes_a_private_key_and_prints_its_public_key() {
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("vapid.pem");
    let run = Command::new(BIN)
        .args(["gen-vapid", "--out"])
        .arg(&out)
        .output()
        .expect("runs");
    assert!(run.status.success());
    let public = String::from_utf8(run.stdout).expect("utf8");
    let public = public.trim();
    let pem = std::fs::read_to_string(&out).expect("key file");
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let key = pushgate::keys::parse_p256_key(&pem).expect("P-256 key");
    let expected = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(key.verifying_key().to_encoded_point(false).as_bytes())
    };
    assert_eq!(public, expected);
    assert_eq!(public.len(), 87, "65 bytes in base64url");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // Never overwrites silently.
    let again = Command::new(BIN)
        .args(["gen-vapid", "--out"])
        .arg(&out)
        .output()
        .expect("runs");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("use --force to replace it"));
    assert_eq!(std::fs::read_to_string(&out).expect("key"), pem);
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .expect("meta")
        .permissions()
        .mode()
        & 0o7777
}

#[cfg(unix)]
#[test]
fn gen_vapid_force_replaces_a_readable_file_with_a_fresh_private_one() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("vapid.pem");
    std::fs::write(&out, "an old key").expect("old file");
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let run = Command::new(BIN)
        .args(["gen-vapid", "--force", "--out"])
        .arg(&out)
        .output()
        .expect("runs");
    assert!(run.status.success(), "{run:?}");
    let pem = std::fs::read_to_string(&out).expect("key file");
    pushgate::keys::parse_p256_key(&pem).expect("a fresh P-256 key");
    assert_eq!(mode(&out), 0o600, "not the old file's 0644");
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(said.contains("(mode 0600)"), "{said}");
}

#[cfg(unix)]
#[test]
fn gen_vapid_force_replaces_a_symlink_and_leaves_its_target_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let elsewhere = tempfile::tempdir().expect("another dir");
    let target = elsewhere.path().join("not-a-key.txt");
    std::fs::write(&target, "someone else's file").expect("target");
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = dir.path().join("vapid.pem");
    std::os::unix::fs::symlink(&target, &out).expect("symlink");
    let run = Command::new(BIN)
        .args(["gen-vapid", "--force", "--out"])
        .arg(&out)
        .output()
        .expect("runs");
    assert!(run.status.success(), "{run:?}");
    assert_eq!(
        std::fs::read_to_string(&target).expect("target"),
        "someone else's file"
    );
    assert_eq!(mode(&target), 0o644, "the target keeps its mode");
    let meta = std::fs::symlink_metadata(&out).expect("out");
    assert!(
        meta.file_type().is_file(),
        "the link was replaced by a file"
    );
    assert_eq!(mode(&out), 0o600);
    let pem = std::fs::read_to_string(&out).expect("key file");
    pushgate::keys::parse_p256_key(&pem).expect("a P-256 key");
}

#[test]
fn serve_logs_one_line_per_request_with_redacted_pushkeys() {
    let dir = tempfile::tempdir().expect("dir");
    let key = dir.path().join("vapid.pem");
    assert!(Command::new(BIN)
        .args(["gen-vapid", "--out"])
        .arg(&key)
        .output()
        .expect("runs")
        .status
        .success());
    let config = dir.path().join("pushgate.yaml");
    std::fs::write(
        &config,
        format!(
            "store: none\nhttp:\n  bind_addresses: ['127.0.0.1']\n  port: 0\nlog:\n  level: debug\n  format: json\napps:\n  org.example.web:\n    type: webpush\n    vapid_private_key: {}\n    vapid_contact_email: ops@example.org\n",
            key.display()
        ),
    )
    .expect("config");
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let ready: serde_json::Value = loop {
        let line = lines.next().expect("a ready line").expect("read");
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        if v["message"].as_str().is_some_and(|m| m.contains("ready")) {
            break v;
        }
    };
    let addr = ready["listen"].as_str().expect("listen").to_owned();

    let pushkey = "SECRETPUSHKEY-0123456789-abcdefghijklmnop";
    let body = serde_json::json!({"notification": {"event_id": "$e", "devices": [
        {"app_id": "org.example.web", "pushkey": pushkey, "data": {"endpoint": "https://push.example.net/x"}}
    ]}});
    pushgate::net::install_crypto_provider();
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let answer: serde_json::Value = rt.block_on(async {
        let resp = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
            .post(format!("http://{addr}/_matrix/push/v1/notify"))
            .body(body.to_string())
            .send()
            .await
            .expect("answer");
        resp.json().await.expect("json")
    });
    assert_eq!(answer, serde_json::json!({"rejected": [pushkey]}));

    // The request's summary is on its access line (`request`), the last line
    // it writes. Read on a thread so that a line that never comes fails the
    // test at the deadline instead of blocking it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while let Ok(line) =
        rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
    {
        let done = line.contains("\"message\":\"request\"") && line.contains("/notify");
        seen.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let all = seen.join("\n");
    assert!(!all.contains(pushkey), "full pushkey logged:\n{all}");
    let device: serde_json::Value = serde_json::from_str(
        seen.iter()
            .find(|l| l.contains("\"message\":\"device\""))
            .expect("device line"),
    )
    .expect("json");
    assert_eq!(device["pushkey"], "SECR…mnop");
    assert_eq!(device["outcome"], "rejected");
    let notify: serde_json::Value = serde_json::from_str(
        seen.iter()
            .find(|l| l.contains("\"message\":\"request\""))
            .unwrap_or_else(|| panic!("no access line for /notify:\n{}", seen.join("\n"))),
    )
    .expect("json");
    assert_eq!(notify["status"], 200);
    assert_eq!(notify["app_ids"], "org.example.web");
    assert_eq!(notify["rejected"], 1);
    assert_eq!(notify["devices"], 1);
    assert_eq!(notify["request_id"], device["request_id"]);
}

/// Starts `pushgate serve` on 127.0.0.1, port 0, with a SQLite store; returns
/// the child and the address it listens on.
fn serve_sqlite(dir: &std::path::Path) -> (std::process::Child, String) {
    let config = dir.join("pushgate.yaml");
    std::fs::write(
        &config,
        format!(
            "store:\n  sqlite:\n    path: '{}'\nhttp:\n  bind_addresses: ['127.0.0.1']\n  port: 0\nlog:\n  format: json\napps: {{}}\n",
            dir.join("store.db").display()
        ),
    )
    .expect("config");
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let ready: serde_json::Value = loop {
        let line = lines.next().expect("a ready line").expect("read");
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        if v["message"].as_str().is_some_and(|m| m.contains("ready")) {
            break v;
        }
    };
    // Keep reading so that the gateway never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, ready["listen"].as_str().expect("listen").to_owned())
}

fn healthcheck(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .arg("healthcheck")
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn healthcheck_exits_0_only_when_ready_answers_200() {
    let dir = tempfile::tempdir().expect("dir");
    let (mut child, addr) = serve_sqlite(dir.path());
    let port = addr.rsplit_once(':').expect("port").1.to_owned();

    assert_eq!(
        healthcheck(&["--url", &format!("http://{addr}/ready")]),
        (Some(0), String::new())
    );
    // `localhost` resolves (through /etc/hosts).
    assert_eq!(
        healthcheck(&["--url", &format!("http://localhost:{port}/ready")]).0,
        Some(0)
    );
    let (code, said) = healthcheck(&["--url", &format!("http://{addr}/nowhere")]);
    assert_eq!(code, Some(1));
    assert_eq!(said, format!("http://{addr}/nowhere: answered 404\n"));
    // Without --url: /ready on the config's address and port.
    let config = dir.path().join("running.yaml");
    std::fs::write(
        &config,
        format!("store: none\nhttp:\n  bind_addresses: ['0.0.0.0']\n  port: {port}\napps: {{}}\n"),
    )
    .expect("config");
    let run = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("healthcheck")
        .output()
        .expect("runs");
    assert_eq!(run.status.code(), Some(0), "{run:?}");

    let _ = child.kill();
    let _ = child.wait();
    let (code, said) = healthcheck(&["--url", &format!("http://{addr}/ready")]);
    assert_eq!(code, Some(1));
    assert!(
        said.starts_with(&format!("cannot connect to {addr}")),
        "{said}"
    );
    let run = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("healthcheck")
        .output()
        .expect("runs");
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert_eq!(
        healthcheck(&["--url", "https://127.0.0.1:1/ready"]),
        (
            Some(1),
            "https://127.0.0.1:1/ready: only http:// URLs are checked\n".to_owned()
        )
    );
}

#[test]
fn healthcheck_gives_up_after_5_seconds_on_a_silent_server() {
    // Accepted by the kernel's backlog, never answered.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr");
    let started = std::time::Instant::now();
    let (code, said) = healthcheck(&["--url", &format!("http://{addr}/ready")]);
    assert_eq!(code, Some(1));
    assert!(
        said.starts_with(&format!("http://{addr}/ready: ")),
        "{said}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "waited for the timeout"
    );
    drop(silent);
}

fn stdout_of(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().expect("runs");
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("utf8")
}

#[test]
fn version_names_the_git_commit() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let commit = std::env::var("PUSHGATE_GIT_COMMIT").unwrap_or(commit);
    assert_eq!(
        stdout_of(&["--version"]),
        format!("pushgate {} ({commit})\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn completions_cover_every_subcommand_for_each_shell() {
    let bash = stdout_of(&["completions", "bash"]);
    assert!(bash.contains("_pushgate()"), "{bash}");
    let zsh = stdout_of(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef pushgate\n"), "{zsh}");
    let fish = stdout_of(&["completions", "fish"]);
    assert!(fish.contains("complete -c pushgate"), "{fish}");
    for script in [&bash, &zsh, &fish] {
        for sub in [
            "check-config",
            "send-test",
            "outbox",
            "rejections",
            "claims",
            "healthcheck",
            "completions",
        ] {
            assert!(script.contains(sub), "{sub} missing");
        }
        assert!(script.contains("older-than"), "nested options completed");
    }
    // The bash script is valid bash.
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("pushgate.bash");
    std::fs::write(&file, &bash).expect("write");
    let check = Command::new("bash")
        .arg("-n")
        .arg(&file)
        .output()
        .expect("bash");
    assert!(check.status.success(), "{check:?}");
    let wrong = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .expect("runs");
    assert_eq!(wrong.status.code(), Some(2));
}

#[test]
fn man_page_is_roff_with_the_commands() {
    let man = stdout_of(&["man"]);
    assert!(
        man.contains(&format!(
            ".TH pushgate 1  \"pushgate {}",
            env!("CARGO_PKG_VERSION")
        )),
        "{man}"
    );
    assert!(
        man.contains(".SH NAME\npushgate \\- A Matrix push gateway"),
        "{man}"
    );
    for sub in ["serve", "check\\-config", "outbox", "healthcheck", "man"] {
        assert!(man.contains(sub), "{sub} missing:\n{man}");
    }
}
