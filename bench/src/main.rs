//! `pushgate-bench`: starts the fake push services and a release `pushgate`
//! process, drives `/notify` at several concurrency levels per case, and
//! prints a table and a JSON file (see `docs/performance.md`). It exits
//! non-zero when any push is lost or doubled, or any request fails — never
//! because of speed.
//!
//! ```text
//! pushgate-bench [--quick] [--secs N] [--runs N] [--case NAME]... [--levels N,N] [--log-format F] [--out FILE] [--gateway BIN]
//! ```
//!
//! `--levels` replaces the concurrency levels of every selected case;
//! `--log-format` sets the gateway's `log.format` (default: its own, text).

mod cases;
mod gateway;
mod load;
mod report;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cases::{Case, Store, Upstreams};
use gateway::Gateway;
use report::{Measured, Row};

struct Args {
    quick: bool,
    secs: f64,
    runs: usize,
    cases: Vec<String>,
    levels: Vec<usize>,
    log_format: Option<String>,
    out: PathBuf,
    gateway: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut quick, mut secs, mut runs, mut cases, mut levels, mut out, mut gateway) =
        (false, None, None, Vec::new(), Vec::new(), None, None);
    let mut log_format = None;
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--quick" => quick = true,
            "--secs" => secs = Some(value("--secs")?.parse::<f64>().map_err(|e| format!("--secs: {e}"))?),
            "--runs" => runs = Some(value("--runs")?.parse::<usize>().map_err(|e| format!("--runs: {e}"))?),
            "--case" => cases.extend(value("--case")?.split(',').map(str::to_owned)),
            "--levels" => {
                for l in value("--levels")?.split(',') {
                    levels.push(l.parse::<usize>().map_err(|e| format!("--levels: {e}"))?);
                }
            }
            "--log-format" => log_format = Some(value("--log-format")?),
            "--out" => out = Some(PathBuf::from(value("--out")?)),
            "--gateway" => gateway = Some(PathBuf::from(value("--gateway")?)),
            "-h" | "--help" => {
                return Err("usage: pushgate-bench [--quick] [--secs N] [--runs N] [--case NAME[,NAME]]... [--levels N[,N]] [--log-format text|json] [--out FILE] [--gateway BIN]".into())
            }
            other => return Err(format!("unknown argument {other} (see --help)")),
        }
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    Ok(Args {
        quick,
        secs: secs.unwrap_or(if quick { 2.0 } else { 5.0 }),
        runs: runs.unwrap_or(if quick { 1 } else { 3 }).max(1),
        cases,
        levels,
        log_format,
        out: out.unwrap_or_else(|| {
            PathBuf::from(if quick {
                "target/bench/quick.json"
            } else {
                "target/bench/results.json"
            })
        }),
        gateway: gateway.unwrap_or_else(|| exe_dir.join("pushgate")),
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let selected: Vec<Case> = cases::all()
        .into_iter()
        .filter(|c| args.cases.is_empty() || args.cases.iter().any(|n| n == c.name))
        .filter(|c| !args.quick || !c.quick_levels.is_empty())
        .collect();
    if selected.is_empty() {
        eprintln!(
            "no case selected; cases are: {}",
            cases::all()
                .iter()
                .map(|c| c.name)
                .collect::<Vec<_>>()
                .join(", ")
        );
        return ExitCode::from(2);
    }
    eprintln!(
        "pushgate-bench: gateway {}, {} s measured per level after a {} s warm-up, {} run(s) each",
        args.gateway.display(),
        args.secs,
        warmup(&args).as_secs_f64(),
        args.runs
    );
    let mut rows = Vec::new();
    let mut failed = false;
    report::print_header();
    for case in &selected {
        match run_case(&args, case).await {
            Ok(case_rows) => {
                for r in case_rows {
                    report::print_row(&r);
                    failed |= r.failed();
                    rows.push(r);
                }
            }
            Err(e) => {
                println!("{:<27} could not run: {e}", case.name);
                failed = true;
            }
        }
    }
    println!();
    for (target, measured, met) in report::targets(&rows) {
        println!(
            "{} {target}: {measured}",
            if met { "met   " } else { "MISSED" }
        );
    }
    let meta = serde_json::json!({
        "commit": command_output("git", &["rev-parse", "--short", "HEAD"]),
        "cpu": std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| c.lines().find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "measured_s": args.secs, "warmup_s": warmup(&args).as_secs_f64(), "runs": args.runs, "quick": args.quick,
    });
    if let Some(parent) = args.out.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    match std::fs::write(&args.out, format!("{:#}\n", report::to_json(&rows, meta))) {
        Ok(()) => eprintln!("results written to {}", args.out.display()),
        Err(e) => eprintln!("cannot write {}: {e}", args.out.display()),
    }
    if failed {
        eprintln!("FAILED: a push was lost or doubled, or a request failed (see above)");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn warmup(args: &Args) -> Duration {
    Duration::from_millis(if args.quick { 500 } else { 2000 })
}

fn command_output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

async fn run_case(args: &Args, case: &Case) -> Result<Vec<Row>, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let apns_key = cases::gen_key(&args.gateway, dir.path(), "apns-key.pem")?;
    let vapid = cases::gen_key(&args.gateway, dir.path(), "vapid-key.pem")?;
    let ups = Upstreams::start(apns_key, case.upstream_delay).await?;
    let postgres = match case.store {
        Store::Postgres => Some(testkit::postgres::fresh_database().await.ok_or(
            "PUSHGATE_TEST_POSTGRES names no PostgreSQL server (scripts/bench starts one)",
        )?),
        _ => None,
    };
    let (port, metrics_port) = (gateway::free_port()?, gateway::free_port()?);
    let config = ups.write_config(
        dir.path(),
        case,
        port,
        metrics_port,
        postgres.as_deref(),
        &vapid,
    )?;
    if let Some(format) = &args.log_format {
        let text = std::fs::read_to_string(&config).map_err(|e| format!("config: {e}"))?;
        let text = text.replacen("log:\n", &format!("log:\n  format: {format}\n"), 1);
        std::fs::write(&config, text).map_err(|e| format!("config: {e}"))?;
    }
    if case.prefill_rejections > 0 {
        // The gateway creates the schema; the rows go in while it is stopped.
        drop(Gateway::start(&args.gateway, &config, port, metrics_port).await?);
        cases::prefill_sqlite(
            &dir.path().join("pushgate.db"),
            case.app_id(),
            case.prefill_rejections,
        )
        .await?;
    }
    let gw = Gateway::start(&args.gateway, &config, port, metrics_port).await?;
    let bodies = ups.bodies(case);
    let seq = Arc::new(AtomicU64::new(0));
    let levels = if !args.levels.is_empty() {
        &args.levels[..]
    } else if args.quick {
        case.quick_levels
    } else {
        case.levels
    };
    let mut rows: Vec<Row> = levels
        .iter()
        .map(|&c| Row {
            case: case.name,
            concurrency: c,
            runs: Vec::new(),
        })
        .collect();
    for _ in 0..args.runs {
        for row in rows.iter_mut() {
            let m = measure(args, case, &ups, &gw, &bodies, &seq, row.concurrency).await?;
            row.runs.push(m);
        }
    }
    drop(gw);
    if let Some(url) = postgres {
        testkit::postgres::drop_database(&url).await;
    }
    Ok(rows)
}

async fn measure(
    args: &Args,
    case: &Case,
    ups: &Upstreams,
    gw: &Gateway,
    bodies: &load::BodyFn,
    seq: &Arc<AtomicU64>,
    concurrency: usize,
) -> Result<Measured, String> {
    let (warm, window) = (warmup(args), Duration::from_secs_f64(args.secs));
    let (accepted0, refused0) = ups.counts();
    let delivered0 = gw.delivered().await?;

    let stop = Arc::new(AtomicBool::new(false));
    let peak_kib = Arc::new(AtomicU64::new(gw.rss_kib()));
    let sampler = {
        let (stop, peak, pid) = (stop.clone(), peak_kib.clone(), gw.pid());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(gateway::rss_kib_of(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let load = tokio::spawn(load::run(
        gw.port,
        bodies.clone(),
        seq.clone(),
        concurrency,
        warm,
        window,
    ));
    tokio::time::sleep(warm).await;
    let (a1, cpu1) = (ups.counts().0, gw.cpu_seconds());
    tokio::time::sleep(window).await;
    let (a2, cpu2) = (ups.counts().0, gw.cpu_seconds());
    let mut res = load.await.map_err(|e| format!("load task: {e}"))?;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;

    // With a store, pushes past the answer budget finish from the outbox: wait for them (bounded).
    let expected = res.ok_total * case.devices as u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while ups.counts().0 - accepted0 < expected && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (accepted3, refused3) = ups.counts();
    let delivered = accepted3 - accepted0;
    let reported = gw.delivered().await? - delivered0;
    res.latencies_us.sort_unstable();
    let q = |x| report::quantile_ms(&res.latencies_us, x);
    let notifications = (a2 - a1) as f64;
    let refused = refused3 - refused0;
    let mut first_error = res.first_error.take();
    if refused > 0 {
        first_error.get_or_insert(format!("the fake push services refused {refused} pushes"));
    }
    if reported != delivered {
        first_error.get_or_insert(format!(
            "the gateway reports {reported} delivered, the fakes counted {delivered}"
        ));
    }
    Ok(Measured {
        requests_per_s: res.measured as f64 / window.as_secs_f64(),
        notifications_per_s: notifications / window.as_secs_f64(),
        p50_ms: q(0.50),
        p90_ms: q(0.90),
        p99_ms: q(0.99),
        p999_ms: q(0.999),
        rss_peak_mib: peak_kib.load(Ordering::Relaxed) as f64 / 1024.0,
        cpu_s_per_1000: if notifications > 0.0 {
            (cpu2 - cpu1) / notifications * 1000.0
        } else {
            0.0
        },
        errors: res.errors + refused,
        lost: expected.saturating_sub(delivered),
        doubled: delivered.saturating_sub(expected),
        mismatch: reported.abs_diff(delivered),
        first_error,
    })
}
