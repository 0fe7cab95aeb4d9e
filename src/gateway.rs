//! Start-up: turns a validated [`Config`] into pushkins, routes and bound
//! listeners, then serves until the shutdown future completes.
//!
//! `build` and `run_until` are separate so tests bind port 0, read the
//! addresses, and pass their own shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::api::{self, AppState};
use crate::config::{AppKind, Config};
use crate::dispatch::{outbox, Dispatcher};
use crate::pushkin::{apns, fcm, webpush, Pushkin, Settings};
use crate::routing::{Route, Routes};
use crate::store;
use crate::telemetry::metrics::{Metrics, Service};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
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
    router: axum::Router,
    metrics_listener: Option<TcpListener>,
    dispatcher: Arc<Dispatcher>,
}

/// Builds one pushkin per configured app.
pub fn build_routes(config: &Config, metrics: &Metrics) -> Result<Routes, StartError> {
    let mut routes = Routes::default();
    for app in &config.apps {
        let service = match &app.kind {
            AppKind::WebPush(_) => Service::WebPush,
            AppKind::Apns(_) => Service::Apns,
            AppKind::Fcm(_) => Service::Gcm,
        };
        let settings = Settings {
            connect_timeout: config.dispatch.connect_timeout,
            timeout: config.dispatch.upstream_timeout,
            proxy: config.proxy.as_deref(),
            metrics: metrics.upstream(service, &app.id),
        };
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
        };
        routes.add(Route {
            key: app.id.clone(),
            pushkin,
            inflight: Arc::new(Semaphore::new(app.inflight_request_limit)),
        });
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
        }
        let dispatcher = Arc::new(Dispatcher::new(
            routes,
            store,
            config.dispatch.clone(),
            metrics,
        ));
        let state = Arc::new(AppState::new(dispatcher.clone(), config.limits.clone()));
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
            router: api::router(state),
            metrics_listener,
            dispatcher,
        })
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

    /// Serves until `shutdown` completes, then lets in-flight requests finish.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = tx.send(true);
        });
        let mut background = Vec::new();
        if let Some(store) = self.dispatcher.store() {
            background.push(tokio::spawn(outbox::run(
                self.dispatcher.clone(),
                store.clone(),
                rx.clone(),
            )));
            background.push(tokio::spawn(outbox::housekeeping(
                self.dispatcher.policy().clone(),
                store.clone(),
                rx.clone(),
            )));
        }
        let mut servers = Vec::new();
        if let Some(listener) = self.metrics_listener {
            let mut rx = rx.clone();
            let router = api::metrics::router(self.dispatcher.clone());
            servers.push(tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = rx.wait_for(|stop| *stop).await;
                    })
                    .await
            }));
        }
        for listener in self.listeners {
            let mut rx = rx.clone();
            let router = self.router.clone();
            servers.push(tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = rx.wait_for(|stop| *stop).await;
                    })
                    .await
            }));
        }
        for s in servers {
            match s.await {
                Ok(r) => r?,
                Err(e) => return Err(std::io::Error::other(e)),
            }
        }
        for task in background {
            let _ = task.await;
        }
        Ok(())
    }
}
