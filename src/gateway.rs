//! Start-up: turns a validated [`Config`] into pushkins, routes and bound
//! listeners, then serves until the shutdown future completes.
//!
//! `build` and `run_until` are separate so tests bind port 0, read the
//! addresses, and pass their own shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::api::serve::{self, ConnectionCap};
use crate::api::tls::{self, CertResolver};
use crate::api::{self, AppState};
use crate::config::{AppKind, Config, HttpConfig};
use crate::dispatch::{outbox, Dispatcher};
use crate::pushkin::{apns, fcm, unifiedpush, webpush, Pushkin, Settings};
use crate::routing::{Route, Routes};
use crate::telemetry::metrics::{Metrics, Service};
use crate::{net, store};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("turning `tls` on or off needs a restart (a reload only replaces the certificate)")]
    TlsChange,
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("apps.{app}: {source}")]
    Client {
        app: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

pub struct Gateway {
    listeners: Vec<TcpListener>,
    site: api::Site,
    metrics_listener: Option<TcpListener>,
    dispatcher: Arc<Dispatcher>,
    shutdown_timeout: Duration,
    /// The inbound certificate, when `tls` is configured.
    tls: Option<Arc<CertResolver>>,
    /// The timers every connection is served with.
    http: Arc<HttpConfig>,
    /// The connection caps of the API listeners (not the metrics listener).
    cap: Arc<ConnectionCap>,
}

/// Applies a re-read configuration to a running gateway (`SIGHUP`).
#[derive(Clone)]
pub struct Reloader {
    dispatcher: Arc<Dispatcher>,
    tls: Option<Arc<CertResolver>>,
}

/// What a reload changed, by app key.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Apps kept (rebuilt from the new config, whether or not their keys changed).
    pub kept: Vec<String>,
    /// The inbound TLS certificate was re-read.
    pub certificate: bool,
}

impl Reloader {
    /// Builds every app of `config` and puts them in force for new requests;
    /// on any error nothing changes. Only `apps` is reloaded: listeners, store,
    /// limits and dispatch policy keep their start-up values.
    pub fn reload(&self, config: &Config) -> Result<Reloaded, StartError> {
        let routes = build_routes(config, self.dispatcher.metrics())?;
        let certificate = match (&self.tls, &config.tls) {
            (Some(resolver), Some(tls)) => {
                resolver.replace(tls.key.clone());
                true
            }
            (None, None) => false,
            _ => return Err(StartError::TlsChange),
        };
        let old: Vec<String> = self.dispatcher.routes().keys();
        let new: Vec<String> = routes.keys();
        self.dispatcher.replace_routes(routes);
        Ok(Reloaded {
            added: new.iter().filter(|k| !old.contains(k)).cloned().collect(),
            removed: old.iter().filter(|k| !new.contains(k)).cloned().collect(),
            kept: new.iter().filter(|k| old.contains(k)).cloned().collect(),
            certificate,
        })
    }
}

/// Builds one pushkin per configured app.
pub fn build_routes(config: &Config, metrics: &Metrics) -> Result<Routes, StartError> {
    let mut routes = Routes::default();
    for app in &config.apps {
        let service = match &app.kind {
            AppKind::WebPush(_) => Service::WebPush,
            AppKind::Apns(_) => Service::Apns,
            AppKind::Fcm(_) => Service::Gcm,
            AppKind::UnifiedPush(_) => Service::UnifiedPush,
        };
        let settings = Settings {
            connect_timeout: config.dispatch.connect_timeout,
            timeout: config.dispatch.upstream_timeout,
            proxy: config.proxy.as_deref(),
            metrics: metrics.upstream(service, &app.id),
        };
        if let Some(not_after) = app.certificate_expiry() {
            metrics.client_cert_expiry(&app.id, not_after);
        }
        let pushkin: Arc<dyn Pushkin> = match &app.kind {
            AppKind::WebPush(w) => {
                webpush::build(w, &settings).map_err(|source| StartError::Client {
                    app: app.id.clone(),
                    source: source.into(),
                })?
            }
            AppKind::Apns(a) => apns::build(a, &settings).map_err(|source| StartError::Client {
                app: app.id.clone(),
                source: source.into(),
            })?,
            AppKind::Fcm(f) => fcm::build(f, &settings).map_err(|source| StartError::Client {
                app: app.id.clone(),
                source: source.into(),
            })?,
            AppKind::UnifiedPush(u) => {
                unifiedpush::build(u, &settings).map_err(|source| StartError::Client {
                    app: app.id.clone(),
                    source: source.into(),
                })?
            }
        };
        let route = Route {
            key: app.id.clone(),
            pushkin,
            inflight: Arc::new(Semaphore::new(app.inflight_request_limit)),
            outcomes: metrics.app_outcomes(&app.id),
        };
        match &app.kind {
            AppKind::UnifiedPush(u) if u.default_app => routes.add_default(route),
            _ => routes.add(route),
        }
    }
    Ok(routes)
}

impl Gateway {
    /// Builds pushkins and binds every `http.bind_addresses` on `http.port`.
    pub async fn build(config: &Config) -> Result<Gateway, StartError> {
        let metrics = Arc::new(Metrics::new());
        let routes = build_routes(config, &metrics)?;
        let store = store::open(&config.store).await?;
        if let Some(s) = &store {
            tracing::info!(backend = s.backend(), "store opened");
            // The outbox worker starts with the gateway (`run_until`): ready from the start.
            metrics.outbox_worker_up(true);
        }
        let dispatcher = Arc::new(Dispatcher::new(
            routes,
            store,
            config.dispatch.clone(),
            metrics,
        ));
        let state = Arc::new(AppState::new(
            dispatcher.clone(),
            config.limits.clone(),
            config.http.body_read_timeout,
        ));
        let cap = ConnectionCap::new(
            config.limits.max_connections,
            config.limits.max_connections_per_ip,
            dispatcher.metrics().clone(),
        );
        check_fd_limit(config.limits.max_connections);
        let mut listeners = Vec::new();
        for ip in &config.http.bind_addresses {
            let addr = SocketAddr::new(*ip, config.http.port);
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })?;
            listeners.push(listener);
        }
        let metrics_listener = match config.metrics.prometheus {
            Some((ip, port)) => {
                let addr = SocketAddr::new(ip, port);
                let l = TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind { addr, source })?;
                Some(l)
            }
            None => None,
        };
        Ok(Gateway {
            listeners,
            site: api::Site::api(state),
            metrics_listener,
            dispatcher,
            shutdown_timeout: config.http.shutdown_timeout,
            tls: config
                .tls
                .as_ref()
                .map(|t| CertResolver::new(t.key.clone())),
            http: Arc::new(config.http.clone()),
            cap,
        })
    }

    pub fn reloader(&self) -> Reloader {
        Reloader {
            dispatcher: self.dispatcher.clone(),
            tls: self.tls.clone(),
        }
    }

    /// Where the Prometheus exporter listens, when enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Serves until `shutdown` completes; then stops accepting, lets in-flight
    /// requests and the pushes still being sent after their answer finish
    /// within `http.shutdown_timeout`, and stops the outbox worker after its
    /// current round.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let (stopped_at_tx, stopped_at) = tokio::sync::oneshot::channel::<Instant>();
        tokio::spawn(async move {
            shutdown.await;
            let _ = stopped_at_tx.send(Instant::now());
            let _ = tx.send(true);
        });
        let mut background = Vec::new();
        if let Some(store) = self.dispatcher.store() {
            let (d, s, stop) = (self.dispatcher.clone(), store.clone(), rx.clone());
            background.push(tokio::spawn(outbox::supervise(
                self.dispatcher.metrics().clone(),
                rx.clone(),
                move || outbox::run(d.clone(), s.clone(), stop.clone()),
            )));
            background.push(tokio::spawn(outbox::housekeeping(
                self.dispatcher.policy().clone(),
                store.clone(),
                self.dispatcher.clock().clone(),
                rx.clone(),
            )));
        }
        let mut servers: Vec<futures::future::BoxFuture<'static, std::io::Result<()>>> = Vec::new();
        if let Some(listener) = self.metrics_listener {
            let site = api::Site::plain(api::metrics::router(self.dispatcher.clone()));
            servers.push(Box::pin(serve::serve(
                listener,
                site,
                None,
                self.http.clone(),
                None,
                rx.clone(),
            )));
        }
        let acceptor = self.tls.as_ref().map(|r| tls::acceptor(r.clone()));
        for listener in self.listeners {
            servers.push(Box::pin(serve::serve(
                listener,
                self.site.clone(),
                acceptor.clone(),
                self.http.clone(),
                Some(self.cap.clone()),
                rx.clone(),
            )));
        }
        let mut servers = futures::future::join_all(servers);
        let results = tokio::select! {
            r = &mut servers => r,
            at = stopped_at => {
                let deadline = at.unwrap_or_else(|_| Instant::now()) + self.shutdown_timeout;
                match tokio::time::timeout_at(deadline.into(), &mut servers).await {
                    Ok(r) => r,
                    Err(_) => {
                        tracing::warn!(
                            timeout_s = self.shutdown_timeout.as_secs_f64(),
                            "shutdown: requests still in flight at http.shutdown_timeout were cut"
                        );
                        Vec::new()
                    }
                }
            }
        };
        for r in results {
            r?;
        }
        if !self
            .dispatcher
            .finish_after_answer_work(self.shutdown_timeout)
            .await
        {
            tracing::warn!(
                "shutdown: pushes still being sent were cut; their outbox entries are retried at the next start"
            );
        }
        for task in background {
            let _ = task.await;
        }
        Ok(())
    }
}

/// Descriptors kept free beyond `limits.max_connections`: the listeners, the
/// store, the log files and the connections to the push services.
const FD_HEADROOM: u64 = 256;

/// Raises the open-file limit (see `net::fd_limit`) and warns when it is
/// still below what `limits.max_connections` needs.
fn check_fd_limit(max_connections: usize) {
    let limit = net::fd_limit::raise();
    if let Some(from) = limit.raised_from {
        tracing::info!(from, to = %limit.soft_text(), "open-file limit raised to the hard limit");
    }
    if let Some(error) = &limit.error {
        tracing::warn!(%error, "cannot raise the open-file limit");
    }
    let needed = max_connections as u64 + FD_HEADROOM;
    if !net::fd_limit::enough(&limit, needed) {
        tracing::warn!(
            limit = %limit.soft_text(),
            needed,
            "the open-file limit is below limits.max_connections + {FD_HEADROOM}: \
             past it connections wait unanswered in the kernel's backlog; \
             raise the limit (LimitNOFILE, ulimit -n) or lower limits.max_connections"
        );
    }
}
