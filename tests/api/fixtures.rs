//! Every notify body captured from a real Synapse is accepted.

use serde_json::{json, Value};

use crate::helpers::{spawn, NO_APPS};

#[tokio::test]
async fn every_synapse_fixture_is_accepted() {
    let gw = spawn(NO_APPS).await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fixtures/synapse");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).expect("fixtures") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let body: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        let pushkey = body["notification"]["devices"][0]["pushkey"].clone();
        let a = gw.notify(&body).await;
        // No app is configured for the fixtures' app ids, so each device comes back rejected.
        assert_eq!(
            (a.status, a.body),
            (200, json!({"rejected": [pushkey]})),
            "{}",
            path.display()
        );
        seen += 1;
    }
    assert_eq!(seen, 10);
}
