//! A connector layer that counts the connections the client opens, so that
//! operators see connection churn (`pushgate_upstream_connections_opened_total`):
//! a pool that works opens a handful, one that doesn't opens one per push.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use prometheus::IntCounter;
use tower::{Layer, Service};

#[derive(Clone)]
pub struct CountConnections(pub IntCounter);

impl<S> Layer<S> for CountConnections {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            counter: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    counter: IntCounter,
}

impl<S, R> Service<R> for Counted<S>
where
    S: Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let fut = self.inner.call(req);
        let counter = self.counter.clone();
        Box::pin(async move {
            let conn = fut.await?;
            counter.inc();
            Ok(conn)
        })
    }
}
