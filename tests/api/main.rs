//! Black-box tests through the real HTTP API: the gateway runs in-process on
//! 127.0.0.1:0 with a real config, and talks to fake push services from `testkit`.

mod apns;
mod delivery;
mod faults;
mod fcm;
mod fixtures;
mod guard;
mod helpers;
mod hostile;
mod metrics;
mod proxy;
mod rejections;
mod routing;
mod tls;
mod unifiedpush;
mod upstream;
mod validation;
mod webpush;
