//! Results: one row per case and concurrency level (the median of its runs),
//! printed as a table, written as JSON, and compared with the targets of
//! GATEWAY.md §7.

use serde_json::{json, Value};

/// One measured level of one run.
#[derive(Clone, Debug, Default)]
pub struct Measured {
    pub requests_per_s: f64,
    /// Counted at the fakes within the measured window.
    pub notifications_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub rss_peak_mib: f64,
    pub cpu_s_per_1000: f64,
    pub errors: u64,
    /// Pushes the gateway answered for that no fake received (or received twice).
    pub lost: u64,
    pub doubled: u64,
    /// The gateway's own `delivered` count differs from the fakes'.
    pub mismatch: u64,
    pub first_error: Option<String>,
}

pub struct Row {
    pub case: &'static str,
    pub concurrency: usize,
    pub runs: Vec<Measured>,
}

/// The `q`-quantile (0..=1) of sorted microsecond latencies, in ms.
pub fn quantile_ms(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let i = ((sorted_us.len() as f64 * q).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    sorted_us[i] as f64 / 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl Row {
    /// Medians of the runs; error counts are summed, never averaged away.
    pub fn median(&self) -> Measured {
        let m = |f: fn(&Measured) -> f64| median(self.runs.iter().map(f).collect());
        Measured {
            requests_per_s: m(|r| r.requests_per_s),
            notifications_per_s: m(|r| r.notifications_per_s),
            p50_ms: m(|r| r.p50_ms),
            p90_ms: m(|r| r.p90_ms),
            p99_ms: m(|r| r.p99_ms),
            p999_ms: m(|r| r.p999_ms),
            rss_peak_mib: self.runs.iter().map(|r| r.rss_peak_mib).fold(0.0, f64::max),
            cpu_s_per_1000: m(|r| r.cpu_s_per_1000),
            errors: self.runs.iter().map(|r| r.errors).sum(),
            lost: self.runs.iter().map(|r| r.lost).sum(),
            doubled: self.runs.iter().map(|r| r.doubled).sum(),
            mismatch: self.runs.iter().map(|r| r.mismatch).sum(),
            first_error: self.runs.iter().find_map(|r| r.first_error.clone()),
        }
    }

    pub fn failed(&self) -> bool {
        let m = self.median();
        m.errors + m.lost + m.doubled + m.mismatch > 0
    }
}

pub fn print_header() {
    println!(
        "{:<27} {:>5} {:>9} {:>10} {:>7} {:>7} {:>7} {:>8} {:>7} {:>9} {:>6} {:>8}",
        "case",
        "conc",
        "req/s",
        "notif/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "RSS MiB",
        "CPU s/1k",
        "errors",
        "lost"
    );
}

pub fn print_row(r: &Row) {
    let m = r.median();
    println!(
        "{:<27} {:>5} {:>9.0} {:>10.0} {:>7.2} {:>7.2} {:>7.2} {:>8.2} {:>7.1} {:>9.4} {:>6} {:>8}",
        r.case,
        r.concurrency,
        m.requests_per_s,
        m.notifications_per_s,
        m.p50_ms,
        m.p90_ms,
        m.p99_ms,
        m.p999_ms,
        m.rss_peak_mib,
        m.cpu_s_per_1000,
        m.errors,
        m.lost + m.doubled + m.mismatch,
    );
    if let Some(e) = &m.first_error {
        println!("    first error: {e}");
    }
}

fn find(rows: &[Row], case: &str, conc: usize) -> Option<Measured> {
    rows.iter()
        .find(|r| r.case == case && r.concurrency == conc)
        .map(Row::median)
}

/// The targets of issue 19 (GATEWAY.md §7 raised) that this run measured:
/// (target, measured, met). "APNs" is the default configuration: SQLite store, INFO logging.
pub fn targets(rows: &[Row]) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    let rate = |out: &mut Vec<(String, String, bool)>, case: &str, what: &str, min: f64| {
        if let Some(m) = find(rows, case, 64) {
            out.push((
                format!("{what}, concurrency 64: >= {min:.0} notifications/s"),
                format!("{:.0}/s", m.notifications_per_s),
                m.notifications_per_s >= min,
            ));
        }
    };
    rate(&mut out, "apns", "APNs, SQLite store", 20_000.0);
    if let Some(a) = find(rows, "apns", 64) {
        out.push((
            "APNs, SQLite store, concurrency 64: <= 0.05 ms gateway CPU per notification".into(),
            format!("{:.3} ms", a.cpu_s_per_1000),
            a.cpu_s_per_1000 <= 0.05,
        ));
        out.push((
            "APNs, SQLite store, concurrency 64: p99 <= 10 ms".into(),
            format!("{:.2} ms", a.p99_ms),
            a.p99_ms <= 10.0,
        ));
    }
    rate(&mut out, "apns-no-store", "APNs, no store", 25_000.0);
    rate(&mut out, "fcm", "FCM, SQLite store", 20_000.0);
    rate(&mut out, "webpush", "Web Push, SQLite store", 10_000.0);
    if let (Some(s), Some(n)) = (find(rows, "apns", 64), find(rows, "apns-no-store", 64)) {
        let ratio = s.notifications_per_s / n.notifications_per_s.max(1.0);
        out.push((
            "SQLite store >= 80 % of store-less throughput (c=64)".into(),
            format!("{:.0} %", ratio * 100.0),
            ratio >= 0.80,
        ));
    }
    if let (Some(s), Some(p)) = (find(rows, "apns", 64), find(rows, "apns-1m-rejections", 64)) {
        let ratio = p.notifications_per_s / s.notifications_per_s.max(1.0);
        out.push((
            "1 M-row rejection table within 5 % of an empty one (c=64)".into(),
            format!("{:+.1} %", (ratio - 1.0) * 100.0),
            ratio >= 0.95,
        ));
    }
    let rss = rows
        .iter()
        .filter(|r| r.concurrency == 256)
        .map(|r| r.median().rss_peak_mib)
        .fold(0.0, f64::max);
    if rss > 0.0 {
        out.push((
            "Gateway RSS at concurrency 256 <= 40 MiB".into(),
            format!("{rss:.1} MiB"),
            rss <= 40.0,
        ));
    }
    // Linear in devices: the cost per notification does not grow with the devices of a
    // request. Compared at similar pushes in flight: 1 request x 50 devices vs 16 x 1.
    if let (Some(one), Some(fan)) = (find(rows, "apns", 16), find(rows, "apns-fanout-50", 1)) {
        let ratio = fan.cpu_s_per_1000 / one.cpu_s_per_1000.max(1e-9);
        out.push((
            "Fan-out linear in devices: CPU per notification, 1 x 50 devices (c=1) vs 1 device (c=16)".into(),
            format!("{ratio:.2}x"),
            ratio <= 1.10,
        ));
    }
    out
}

pub fn to_json(rows: &[Row], meta: Value) -> Value {
    let row = |r: &Row| {
        let m = r.median();
        json!({
            "case": r.case, "concurrency": r.concurrency, "runs": r.runs.len(),
            "requests_per_s": m.requests_per_s, "notifications_per_s": m.notifications_per_s,
            "latency_ms": {"p50": m.p50_ms, "p90": m.p90_ms, "p99": m.p99_ms, "p99.9": m.p999_ms},
            "rss_peak_mib": m.rss_peak_mib, "cpu_s_per_1000_notifications": m.cpu_s_per_1000,
            "errors": m.errors, "lost": m.lost, "doubled": m.doubled, "gateway_count_mismatch": m.mismatch,
            "first_error": m.first_error,
            "each_run_notifications_per_s": r.runs.iter().map(|x| x.notifications_per_s).collect::<Vec<_>>(),
        })
    };
    let targets: Vec<Value> = targets(rows)
        .into_iter()
        .map(|(t, v, ok)| json!({"target": t, "measured": v, "met": ok}))
        .collect();
    json!({"meta": meta, "results": rows.iter().map(row).collect::<Vec<_>>(), "targets": targets})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank_over_whole_microseconds() {
        let us: Vec<u32> = (1..=1000).map(|i| i * 1000).collect(); // 1 ms .. 1000 ms
        assert_eq!(quantile_ms(&us, 0.50), 500.0);
        assert_eq!(quantile_ms(&us, 0.99), 990.0);
        assert_eq!(quantile_ms(&us, 0.999), 999.0);
        assert_eq!(quantile_ms(&us, 1.0), 1000.0);
        assert_eq!(quantile_ms(&[], 0.5), 0.0);
        assert_eq!(quantile_ms(&[1500], 0.999), 1.5);
    }

    #[test]
    fn medians_keep_every_error_and_the_highest_rss() {
        let run = |rate: f64, rss: f64, errors: u64| Measured {
            notifications_per_s: rate,
            rss_peak_mib: rss,
            errors,
            ..Measured::default()
        };
        let row = Row {
            case: "apns",
            concurrency: 64,
            runs: vec![
                run(300.0, 20.0, 0),
                run(100.0, 31.0, 2),
                run(200.0, 25.0, 0),
            ],
        };
        let m = row.median();
        assert_eq!(m.notifications_per_s, 200.0);
        assert_eq!(m.rss_peak_mib, 31.0);
        assert_eq!(m.errors, 2);
        assert!(row.failed());
    }

    #[test]
    fn targets_hold_the_default_configuration_and_compare_it_with_no_store() {
        let row = |case: &'static str, rate: f64, cpu: f64| Row {
            case,
            concurrency: 64,
            runs: vec![Measured {
                notifications_per_s: rate,
                cpu_s_per_1000: cpu,
                p99_ms: 4.0,
                ..Measured::default()
            }],
        };
        let rows = vec![
            row("apns", 16_000.0, 0.06),
            row("apns-no-store", 20_000.0, 0.04),
        ];
        let got: Vec<(String, String, bool)> = targets(&rows);
        let find = |t: &str| got.iter().find(|(n, _, _)| n.starts_with(t)).cloned();
        assert_eq!(
            find("APNs, SQLite store, concurrency 64: >="),
            Some((
                "APNs, SQLite store, concurrency 64: >= 20000 notifications/s".into(),
                "16000/s".into(),
                false
            ))
        );
        assert_eq!(
            find("APNs, SQLite store, concurrency 64: <= 0.05 ms"),
            Some((
                "APNs, SQLite store, concurrency 64: <= 0.05 ms gateway CPU per notification"
                    .into(),
                "0.060 ms".into(),
                false
            ))
        );
        assert_eq!(
            find("SQLite store >= 80 %"),
            Some((
                "SQLite store >= 80 % of store-less throughput (c=64)".into(),
                "80 %".into(),
                true
            ))
        );
        assert_eq!(
            find("APNs, no store"),
            Some((
                "APNs, no store, concurrency 64: >= 25000 notifications/s".into(),
                "20000/s".into(),
                false
            ))
        );
        assert_eq!(find("FCM"), None);
    }
}
