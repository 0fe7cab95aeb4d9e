//! The `pushgate` command: `serve` (default), `check-config`, `send-test`, `gen-vapid`,
//! the operator's store commands (`store`, `outbox`, `rejections`, `claims`) and `healthcheck`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use p256::pkcs8::{EncodePrivateKey, LineEnding};

use pushgate::config::{self, ConfigError, Severity};
use pushgate::pushkin::webpush::vapid::public_key_b64;
use pushgate::{admin, telemetry, Gateway};

/// `pushgate --version`: the version and the git commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("PUSHGATE_GIT_COMMIT"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "pushgate",
    version = VERSION,
    about = "A Matrix push gateway (Push Gateway API v1)"
)]
struct Cli {
    /// Config file (else $PUSHGATE_CONF, $SYGNAL_CONF, ./pushgate.yaml, ./sygnal.yaml).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Validate the config and list every problem with its key path; exit 1 on errors.
    CheckConfig,
    /// Send one test push to one device through a configured app and show what was
    /// sent and exactly what the push service answered (FCM's OAuth token request
    /// included, its secrets redacted), each exchange as it happens. Exit 0 when delivered.
    SendTest {
        /// The app id (as a pusher would give it).
        #[arg(long)]
        app_id: pushgate::ids::AppId,
        /// The device's pushkey (APNs/FCM token, Web Push p256dh, or UnifiedPush endpoint URL).
        #[arg(long)]
        pushkey: pushgate::ids::PushKey,
        /// The pusher's `data` as JSON; Web Push needs `{"endpoint": ..., "auth": ...}`.
        #[arg(long, default_value = "{}")]
        data: String,
        /// The notification's shape, one of those a homeserver sends.
        #[arg(long, value_enum, default_value = "message")]
        kind: pushgate::sendtest::Kind,
        /// The same as `--kind event-id-only`.
        #[arg(long, conflicts_with = "kind")]
        event_id_only: bool,
        /// The body of `--kind message` (default "Test push from pushgate") or the
        /// file name of `--kind image` (default "pushgate-test.png").
        #[arg(long)]
        body: Option<String>,
        /// Print one JSON report at the end instead of the text as it happens.
        #[arg(long)]
        json: bool,
    },
    /// Write a new P-256 VAPID private key (PEM) and print its public key (base64url).
    GenVapid {
        /// Where to write the private key.
        #[arg(long, short, default_value = "vapid_private_key.pem")]
        out: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// The store as a whole (safe while gateways run).
    #[command(subcommand)]
    Store(admin::StoreCommand),
    /// Pushes waiting in the outbox: list, retry now, drop.
    #[command(subcommand)]
    Outbox(admin::OutboxCommand),
    /// Remembered rejections (dead pushkeys): list, forget a wrong one.
    #[command(subcommand)]
    Rejections(admin::RejectionsCommand),
    /// De-duplication claims: purge old ones.
    #[command(subcommand)]
    Claims(admin::ClaimsCommand),
    /// Exit 0 when the gateway's `/ready` answers 200 within 5 s, else 1 (for
    /// container health checks: needs no shell or curl).
    Healthcheck {
        /// The URL to check (default: `/ready` on the config's first
        /// `http.bind_addresses` and `http.port`, else http://127.0.0.1:5000/ready).
        #[arg(long)]
        url: Option<String>,
    },
    /// Print a shell completion script (e.g. `pushgate completions bash > /etc/bash_completion.d/pushgate`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the manual page (roff), e.g. `pushgate man > /usr/local/share/man/man1/pushgate.1`.
    Man,
}

/// The shells `completions` writes for.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

// mimalloc instead of glibc's malloc: less CPU per notification under load
// (docs/performance.md). Its settings are read from the environment
// (`MIMALLOC_*`, see docs/operator-guide.md); the defaults were measured to
// be the better choice here.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.config.as_deref()),
        Command::CheckConfig => check_config(cli.config.as_deref()),
        Command::GenVapid { out, force } => gen_vapid(&out, force),
        Command::Store(c) => store_command(cli.config.as_deref(), admin::Command::Store(c)),
        Command::Outbox(c) => store_command(cli.config.as_deref(), admin::Command::Outbox(c)),
        Command::Rejections(c) => {
            store_command(cli.config.as_deref(), admin::Command::Rejections(c))
        }
        Command::Claims(c) => store_command(cli.config.as_deref(), admin::Command::Claims(c)),
        Command::Completions { shell } => {
            let shell = match shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Zsh => clap_complete::Shell::Zsh,
                Shell::Fish => clap_complete::Shell::Fish,
            };
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "pushgate",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::Man => {
            match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("cannot write the manual page: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Healthcheck { url } => {
            let url = url.unwrap_or_else(|| admin::default_ready_url(cli.config.as_deref()));
            match admin::healthcheck(&url, std::time::Duration::from_secs(5)) {
                Ok(200) => ExitCode::SUCCESS,
                Ok(status) => {
                    eprintln!("{url}: answered {status}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::SendTest {
            app_id,
            pushkey,
            data,
            kind,
            event_id_only,
            body,
            json,
        } => {
            let data = match serde_json::from_str::<serde_json::Value>(&data) {
                Ok(serde_json::Value::Object(m)) => m,
                _ => {
                    eprintln!("--data: expected a JSON object, such as '{{\"endpoint\": \"https://…\", \"auth\": \"…\"}}'");
                    return ExitCode::from(2);
                }
            };
            let push = pushgate::sendtest::TestPush {
                app_id,
                pushkey,
                data,
                kind: if event_id_only {
                    pushgate::sendtest::Kind::EventIdOnly
                } else {
                    kind
                },
                body,
            };
            send_test(cli.config.as_deref(), &push, json)
        }
    }
}

fn send_test(path: Option<&Path>, push: &pushgate::sendtest::TestPush, as_json: bool) -> ExitCode {
    let loaded = match config::load(path) {
        Ok(l) => l,
        Err(e) => {
            print_config_error(&e);
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let live: Option<pushgate::sendtest::Live> = if as_json {
        None
    } else {
        Some(Box::new(std::io::stdout()))
    };
    match runtime.block_on(pushgate::sendtest::run(&loaded.config, push, live)) {
        Ok(report) => {
            if as_json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(e) => eprintln!("cannot encode the report: {e}"),
                }
            }
            if report.delivered() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn store_command(path: Option<&Path>, command: admin::Command) -> ExitCode {
    match admin::run(path, command) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn print_config_error(e: &ConfigError) {
    eprintln!("{e}");
}

fn check_config(path: Option<&Path>) -> ExitCode {
    match config::load(path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("{}: {w}", loaded.file.display());
            }
            let mut by_type = std::collections::BTreeMap::<&str, usize>::new();
            for app in &loaded.config.apps {
                *by_type.entry(app.kind.type_name()).or_default() += 1;
            }
            let types: Vec<String> = by_type.iter().map(|(t, n)| format!("{n} {t}")).collect();
            println!(
                "{}: OK ({} app(s){}{})",
                loaded.file.display(),
                loaded.config.apps.len(),
                if types.is_empty() { "" } else { ": " },
                types.join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(ConfigError::Invalid { file, problems }) => {
            for p in &problems {
                eprintln!("{file}: {p}");
            }
            let errors = problems
                .iter()
                .filter(|p| p.severity == Severity::Error)
                .count();
            eprintln!("{file}: {errors} error(s); the gateway would not start");
            ExitCode::FAILURE
        }
        Err(e) => {
            print_config_error(&e);
            ExitCode::FAILURE
        }
    }
}

fn serve(path: Option<&Path>) -> ExitCode {
    let loaded = match config::load(path) {
        Ok(l) => l,
        Err(e) => {
            print_config_error(&e);
            return ExitCode::FAILURE;
        }
    };
    // Dropped last (after the runtime): the lines still queued are written.
    let _log = telemetry::init(&loaded.config.log, &loaded.config.tracing);
    for w in &loaded.warnings {
        tracing::warn!("{}: {w}", loaded.file.display());
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let gateway = match Gateway::build(&loaded.config).await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let addrs: Vec<String> = gateway
            .local_addrs()
            .iter()
            .map(|a| a.to_string())
            .collect();
        tracing::info!(
            config = %loaded.file.display(),
            listen = %addrs.join(", "),
            tls = loaded.config.tls.is_some(),
            apps = loaded.config.apps.len(),
            "pushgate {} ready",
            env!("CARGO_PKG_VERSION")
        );
        #[cfg(unix)]
        tokio::spawn(reload_on_sighup(loaded.file.clone(), gateway.reloader()));
        match gateway.run_until(shutdown_signal()).await {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!("server error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Reopens the log files and re-reads the config file at every `SIGHUP`; a
/// config with errors is refused (errors logged) and the apps in force are kept.
#[cfg(unix)]
async fn reload_on_sighup(file: PathBuf, reloader: pushgate::gateway::Reloader) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: reload disabled");
            return;
        }
    };
    while hup.recv().await.is_some() {
        // logrotate has moved the log files away (or nobody has): start new ones.
        telemetry::reopen_logs();
        let file_name = file.display().to_string();
        match config::load(Some(&file)) {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    tracing::warn!("{file_name}: {w}");
                }
                match reloader.reload(&loaded.config) {
                    Ok(r) => tracing::info!(
                        config = file_name,
                        added = %r.added.join(","),
                        removed = %r.removed.join(","),
                        kept = %r.kept.join(","),
                        certificate_reloaded = r.certificate,
                        "reloaded: apps in force for new requests (listeners, store, limits and dispatch keep their start-up values)"
                    ),
                    Err(e) => tracing::error!(
                        config = file_name,
                        "reload refused, the running config is kept: {e}"
                    ),
                }
            }
            Err(ConfigError::Invalid { file, problems }) => {
                for p in problems.iter().filter(|p| p.severity == Severity::Error) {
                    tracing::error!("{file}: {p}");
                }
                tracing::error!(config = file, "reload refused, the running config is kept");
            }
            Err(e) => {
                tracing::error!(
                    config = file_name,
                    "reload refused, the running config is kept: {e}"
                )
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

fn gen_vapid(out: &Path, force: bool) -> ExitCode {
    let key = p256::SecretKey::random(&mut rand_core::OsRng);
    let pem = match key.to_pkcs8_pem(LineEnding::LF) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cannot encode the key: {e}");
            return ExitCode::FAILURE;
        }
    };
    if force {
        // Replaced, not rewritten: an existing file keeps its mode when
        // truncated, and a symbolic link would be followed to its target. The
        // link or file itself goes; `create_new` below never follows a link,
        // so one put back in between makes the write fail, not go astray.
        match std::fs::symlink_metadata(out) {
            Ok(m) if m.is_dir() => {
                eprintln!("cannot write {}: it is a directory", out.display());
                return ExitCode::FAILURE;
            }
            Ok(_) => {
                if let Err(e) = std::fs::remove_file(out) {
                    eprintln!("cannot replace {}: {e}", out.display());
                    return ExitCode::FAILURE;
                }
            }
            Err(_) => {}
        }
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let written = opts.open(out).and_then(|mut f| {
        f.write_all(pem.as_bytes())?;
        f.metadata()
    });
    let meta = match written {
        Ok(m) => m,
        Err(e) => {
            eprintln!(
                "cannot write {}: {e}{}",
                out.display(),
                if e.kind() == std::io::ErrorKind::AlreadyExists && !force {
                    " (use --force to replace it)"
                } else {
                    ""
                }
            );
            return ExitCode::FAILURE;
        }
    };
    let signing = p256::ecdsa::SigningKey::from(key);
    // The mode the file really has (the umask can only take bits away).
    #[cfg(unix)]
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        format!(" (mode {:04o})", meta.permissions().mode() & 0o7777)
    };
    #[cfg(not(unix))]
    let mode = {
        let _ = meta;
        String::new()
    };
    eprintln!("wrote the VAPID private key to {}{mode}", out.display());
    eprintln!("public key (applicationServerKey for your app's push subscription):");
    println!("{}", public_key_b64(&signing));
    ExitCode::SUCCESS
}
