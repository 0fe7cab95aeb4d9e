//! Stand-in for push services whose pushkin is not implemented yet (APNs, FCM):
//! their apps are configured and validated, and each device is answered as a
//! temporary failure so that the homeserver keeps the pusher and retries later.

use futures::future::BoxFuture;

use super::{Outcome, Pushkin};
use crate::notification::{Device, Notification};

pub struct Unavailable {
    pub type_name: &'static str,
}

impl Pushkin for Unavailable {
    fn type_name(&self) -> &'static str {
        self.type_name
    }

    fn dispatch<'a>(&'a self, _: &'a Notification, _: &'a Device) -> BoxFuture<'a, Outcome> {
        let reason = format!(
            "the {} pushkin is not implemented in this version",
            self.type_name
        );
        Box::pin(async move { Outcome::transient(reason) })
    }
}
