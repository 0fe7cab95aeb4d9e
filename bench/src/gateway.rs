//! The gateway under test: a release `pushgate` process started on a config
//! file, watched through `/proc` (CPU time, resident memory) and its
//! Prometheus listener (what it says it delivered), and killed at the end.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::load::get;

pub struct Gateway {
    child: Child,
    pub port: u16,
    pub metrics_port: u16,
    ticks_per_second: f64,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    /// Starts `bin --config config` and waits (at most 30 s) until `/ready` answers 200.
    pub async fn start(
        bin: &Path,
        config: &Path,
        port: u16,
        metrics_port: u16,
    ) -> Result<Gateway, String> {
        let log = config.with_extension("log");
        let log_file =
            std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        // As deployed by contrib/pushgate.service and the Dockerfile (the
        // allocator's settings, read only from the environment).
        let child = Command::new(bin)
            .env("MIMALLOC_ARENA_EAGER_COMMIT", "0")
            .env("MIMALLOC_PURGE_DELAY", "0")
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut gw = Gateway {
            child,
            port,
            metrics_port,
            ticks_per_second: clock_ticks(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = gw.child.try_wait() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("gateway exited ({status}):\n{text}"));
            }
            if let Ok((200, _)) = get(port, "/ready").await {
                return Ok(gw);
            }
            if Instant::now() > deadline {
                return Err("gateway not ready after 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User + system CPU seconds used so far.
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the command name (which may hold spaces) start at "state".
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // utime and stime are fields 14 and 15 of stat(5): 12 and 13 after "state".
        (ticks(11) + ticks(12)) / self.ticks_per_second
    }

    /// Resident set size now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib_of(self.pid())
    }

    /// The counter `pushgate_outcomes_total{outcome="delivered"}` summed over pushkins.
    pub async fn delivered(&self) -> Result<u64, String> {
        let (status, text) = get(self.metrics_port, "/metrics").await?;
        if status != 200 {
            return Err(format!("metrics answered {status}"));
        }
        Ok(text
            .lines()
            .filter(|l| {
                l.starts_with("pushgate_outcomes_total{") && l.contains("outcome=\"delivered\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64)
    }
}

/// Resident set size of process `pid`, in KiB (0 once it is gone).
pub fn rss_kib_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// `getconf CLK_TCK`, the unit of /proc/<pid>/stat times (100 on Linux almost always).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A free TCP port on 127.0.0.1 (bound, then released for the gateway).
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}
