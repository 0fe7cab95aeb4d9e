//! Fan-out of one notification to all its devices, concurrently, and the
//! summary the API answers with.
//!
//! Every device gets exactly one [`Outcome`]; one device's failure never hides
//! another's result. Without a store, any temporary failure makes the request
//! a 502 so that the homeserver retries it (the `rejected` list still goes back).

use futures::future::join_all;

use crate::notification::{Device, Notification};
use crate::pushkin::Outcome;
use crate::routing::{RouteError, Routes};
use crate::telemetry::redact;

pub struct Dispatcher {
    routes: Routes,
}

/// What happened to every device of one request, in device order.
#[derive(Debug)]
pub struct Summary {
    pub outcomes: Vec<Outcome>,
}

impl Summary {
    /// Pushkeys to give back in `rejected`, once each, in device order.
    pub fn rejected<'a>(&self, devices: &'a [Device]) -> Vec<&'a str> {
        let mut out: Vec<&str> = Vec::new();
        for (d, o) in devices.iter().zip(&self.outcomes) {
            if matches!(o, Outcome::Rejected { .. }) && !out.contains(&d.pushkey.as_str()) {
                out.push(&d.pushkey);
            }
        }
        out
    }

    pub fn count(&self, kind: &str) -> usize {
        self.outcomes.iter().filter(|o| o.kind() == kind).count()
    }
}

impl Dispatcher {
    pub fn new(routes: Routes) -> Self {
        Dispatcher { routes }
    }

    /// Sends to every device at once and waits for all outcomes (each pushkin bounds its own time).
    pub async fn dispatch(&self, n: &Notification, request_id: &str) -> Summary {
        let outcomes = join_all(n.devices.iter().map(|d| self.one(n, d, request_id))).await;
        Summary { outcomes }
    }

    async fn one(&self, n: &Notification, d: &Device, request_id: &str) -> Outcome {
        let outcome = match self.routes.find(&d.app_id) {
            Err(e @ (RouteError::Unknown | RouteError::Ambiguous(_))) => {
                Outcome::rejected(e.to_string())
            }
            Ok(route) => match route.inflight.try_acquire() {
                Err(_) => Outcome::transient("inflight_request_limit reached for this app"),
                Ok(_permit) => route.pushkin.dispatch(n, d).await,
            },
        };
        log_outcome(request_id, d, &outcome);
        outcome
    }
}

/// Every outcome is logged once, with a redacted pushkey.
fn log_outcome(request_id: &str, d: &Device, o: &Outcome) {
    let pushkey = redact(&d.pushkey);
    match o {
        Outcome::Delivered => {
            tracing::debug!(request_id, app_id = %d.app_id, pushkey, outcome = "delivered", "device")
        }
        Outcome::Rejected { reason, .. } => {
            tracing::info!(request_id, app_id = %d.app_id, pushkey, outcome = "rejected", reason, "device")
        }
        Outcome::Failed { reason } => {
            tracing::warn!(request_id, app_id = %d.app_id, pushkey, outcome = "failed", reason, "device")
        }
        Outcome::Transient {
            reason,
            retry_after,
        } => tracing::warn!(
            request_id, app_id = %d.app_id, pushkey, outcome = "temporary", reason,
            retry_after_s = retry_after.map(|r| r.as_secs()), "device"
        ),
    }
}
