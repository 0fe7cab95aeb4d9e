//! Real `pushgate` processes for the tests that need a whole process: signals
//! (`kill -9`, `SIGTERM`, `SIGHUP`), restarts, several instances. Shared by
//! `tests/durability.rs` and `tests/operations.rs` (`mod process;`).

#![allow(dead_code)] // each test file uses a part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_pushgate");

/// A gateway process; killed (SIGKILL) when dropped.
pub struct Gateway {
    child: Child,
    pub addr: String,
    /// Every JSON log line so far.
    pub log: Arc<Mutex<Vec<Value>>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    /// Starts `pushgate --config <config>` (JSON logs) and waits for its "ready" line.
    pub fn start(config: &Path) -> Gateway {
        Gateway::start_with_env(config, &[])
    }

    /// [`Gateway::start`] with these environment variables added.
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Gateway {
        let mut command = Command::new(BIN);
        command
            .envs(env.iter().copied())
            .arg("--config")
            .arg(config);
        Gateway::spawn(command)
    }

    /// [`Gateway::start`] with its open-file limits set to `soft` and `hard`
    /// (by the shell that then `exec`s it, so the pid is the gateway's).
    pub fn start_with_fd_limits(config: &Path, soft: &str, hard: &str) -> Gateway {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            // The soft limit first too: the hard one cannot go below it.
            .arg("ulimit -S -n \"$0\" 2>/dev/null; ulimit -H -n \"$1\" && ulimit -S -n \"$0\" && exec \"$2\" --config \"$3\"")
            .arg(soft)
            .arg(hard)
            .arg(BIN)
            .arg(config);
        Gateway::spawn(command)
    }

    fn spawn(mut command: Command) -> Gateway {
        let mut child = command
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("pushgate starts");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let deadline = Instant::now() + Duration::from_secs(20);
        let log = Arc::new(Mutex::new(Vec::new()));
        let addr = loop {
            assert!(Instant::now() < deadline, "no ready line");
            let line = lines
                .next()
                .expect("gateway exited before it was ready")
                .expect("read");
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let listen = v["listen"].as_str().map(str::to_owned);
            log.lock().expect("log").push(v);
            if let Some(listen) = listen {
                break listen;
            }
        };
        // Keep reading so that a full pipe never blocks the gateway's logging.
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().expect("log").push(v);
                }
            }
        });
        Gateway { child, addr, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `HUP`) with kill(1).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// The process's resident memory now and its peak so far (`VmRSS`,
    /// `VmHWM` in /proc/<pid>/status), in KiB.
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/<pid>/status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{name} in /proc/<pid>/status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill_9(mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }

    /// Waits for the process to exit on its own; its exit code (None: still running).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Waits until a log line's `message` contains `text`; returns that line.
    pub fn wait_log(&self, text: &str, timeout: Duration) -> Option<Value> {
        self.wait_log_nth(text, 1, timeout)
    }

    /// Waits for the `n`-th log line whose `message` contains `text`; returns it.
    pub fn wait_log_nth(&self, text: &str, n: usize, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let found = self
                .log
                .lock()
                .expect("log")
                .iter()
                .filter(|v| v["message"].as_str().is_some_and(|m| m.contains(text)))
                .nth(n - 1)
                .cloned();
            if found.is_some() {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// A new VAPID key at `path` (made by `pushgate gen-vapid`) unless one is there.
pub fn vapid_key(path: &Path) {
    if path.exists() {
        return;
    }
    let ok = Command::new(BIN)
        .args(["gen-vapid", "--out"])
        .arg(path)
        .output()
        .expect("gen-vapid")
        .status
        .success();
    assert!(ok);
}

/// A free loopback port (bound, then released) for a listener the config must name.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Writes `<dir>/<name>.yaml`: a Web Push app `org.example.web` on a fresh
/// VAPID key, JSON logs, port 0, and `extra` YAML appended.
pub fn write_config(dir: &Path, name: &str, extra: &str) -> PathBuf {
    write_config_http(dir, name, "", extra)
}

/// [`write_config`] with more keys for the `http` section (`http` lines, each
/// indented by two spaces).
pub fn write_config_http(dir: &Path, name: &str, http: &str, extra: &str) -> PathBuf {
    let key = dir.join(format!("{name}-vapid.pem"));
    vapid_key(&key);
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &config,
        format!(
            "http:
  bind_addresses: ['127.0.0.1']
  port: 0
{http}log:
  level: info
  format: json
apps:
  org.example.web:
    type: webpush
    vapid_private_key: '{}'
    vapid_contact_email: ops@example.org
    allow_private_endpoints: true
    allow_http_endpoints: true
{extra}",
            key.display()
        ),
    )
    .expect("config");
    config
}

/// Polls the outbox of `store` (a gateway's, opened beside it) until it is
/// empty or `timeout` has passed; returns the entries left. Once it is empty,
/// no push of the requests answered so far can be sent again.
pub async fn wait_outbox_empty(store: &pushgate::config::StoreConfig, timeout: Duration) -> i64 {
    let s = pushgate::store::open(store)
        .await
        .expect("open")
        .expect("store");
    let deadline = Instant::now() + timeout;
    loop {
        let n = s.stats().await.expect("stats").outbox;
        if n == 0 || Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
