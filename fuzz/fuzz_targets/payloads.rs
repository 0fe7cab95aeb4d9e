//! Every payload builder and its truncation on whatever the parser accepts:
//! never panics; the output is valid JSON within the service's size limit
//! (a cut never splits a UTF-8 character, or the output would not be UTF-8).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

use pushgate::notification;
use pushgate::pushkin::{apns, fcm, webpush};

fuzz_target!(|data: &[u8]| {
    let Ok(n) = notification::parse(data, 4) else {
        return;
    };
    for d in &n.devices {
        {
            let p = webpush::payload::build(&n, d);
            if let Ok(bytes) = webpush::payload::encode(p) {
                assert!(bytes.len() <= webpush::payload::MAX_PLAINTEXT);
                assert!(serde_json::from_slice::<Value>(&bytes).is_ok());
            }
        }
        if let Ok(Some(bytes)) = apns::payload::render(&n, d, true, apns::payload::MAX_PAYLOAD) {
            assert!(bytes.len() <= apns::payload::MAX_PAYLOAD);
            assert!(serde_json::from_slice::<Value>(&bytes).is_ok());
        }
        if let Ok(m) = fcm::message::build(&n, d, &Map::new(), true) {
            let data = m["message"]["data"].as_object().expect("data");
            let mut total = 0;
            for (k, v) in data {
                let s = v.as_str().expect("FCM data values are strings");
                assert!(s.len() <= 1024);
                total += k.len() + s.len();
            }
            assert!(total <= fcm::message::MAX_DATA_BYTES);
        }
    }
});
