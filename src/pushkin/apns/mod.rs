//! Apple Push Notification service (`type: apns`).

pub mod payload;
