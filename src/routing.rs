//! Maps a device's `app_id` to the pushkin of the configured app.
//!
//! Exact app ids win; otherwise the glob keys are tried (`*` any run of
//! characters, `?` exactly one; anchored, case-sensitive, dots literal). An
//! unknown app id, or one matched by more than one glob, is answered as
//! rejected: the homeserver should stop using a pusher nobody can serve —
//! unless a default app (UnifiedPush's `default_app: true`) takes every app
//! id that nothing else matches.

use std::collections::HashMap;
use std::sync::Arc;

use crate::glob::{glob_match, is_glob};
use crate::ids::AppId;
use crate::pushkin::Pushkin;
use crate::telemetry::metrics::AppOutcomes;

/// A configured app as the dispatcher sees it.
pub struct Route {
    /// The config key (exact id or glob), for logs.
    pub key: String,
    pub pushkin: Arc<dyn Pushkin>,
    /// Limits dispatches in flight for this app (`inflight_request_limit`).
    pub inflight: Arc<tokio::sync::Semaphore>,
    /// The app's outcome counters.
    pub outcomes: AppOutcomes,
}

#[derive(Default)]
pub struct Routes {
    exact: HashMap<String, Arc<Route>>,
    globs: Vec<Arc<Route>>,
    /// Serves app ids that no exact key or glob matches.
    default: Option<Arc<Route>>,
}

/// Why no route was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no app is configured for this app_id")]
    Unknown,
    #[error("app_id matches several configured globs: {0}")]
    Ambiguous(String),
}

impl Routes {
    pub fn add(&mut self, route: Route) {
        let route = Arc::new(route);
        if is_glob(&route.key) {
            self.globs.push(route);
        } else {
            self.exact.insert(route.key.clone(), route);
        }
    }

    /// Adds `route` as the route of every app id no exact key and no glob
    /// matches. Its own key takes part in no match: a default app keyed `*`
    /// must not make every glob ambiguous.
    pub fn add_default(&mut self, route: Route) {
        self.default = Some(Arc::new(route));
    }

    /// Every configured app key, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .exact
            .keys()
            .cloned()
            .chain(self.globs.iter().map(|r| r.key.clone()))
            .chain(self.default.iter().map(|r| r.key.clone()))
            .collect();
        keys.sort();
        keys
    }

    pub fn find(&self, app_id: &AppId) -> Result<&Arc<Route>, RouteError> {
        let app_id = app_id.as_str();
        if let Some(r) = self.exact.get(app_id) {
            return Ok(r);
        }
        let mut matches = self.globs.iter().filter(|r| glob_match(&r.key, app_id));
        match (matches.next(), matches.next()) {
            (None, _) => self.default.as_ref().ok_or(RouteError::Unknown),
            (Some(r), None) => Ok(r),
            (Some(a), Some(b)) => {
                let mut keys = vec![a.key.as_str(), b.key.as_str()];
                keys.extend(matches.map(|r| r.key.as_str()));
                Err(RouteError::Ambiguous(keys.join(", ")))
            }
        }
    }
}
