//! The `/notify` body parser on arbitrary bytes: never panics, and what it
//! accepts has at least one device, each with an app id and a pushkey.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(n) = pushgate::notification::parse(data, 100) {
        assert!(!n.devices.is_empty());
        assert!(n
            .devices
            .iter()
            .all(|d| !d.app_id.as_str().is_empty() && !d.pushkey.is_empty()));
    }
});
