//! The request-validation table: every malformed request gets its exact status,
//! Matrix errcode and message; nothing a client sends yields a 500.

use serde_json::json;

use crate::helpers::{spawn, NO_APPS};

struct Case {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    body: String,
    status: u16,
    errcode: &'static str,
    error: &'static str,
}

fn case(
    name: &'static str,
    body: impl Into<String>,
    status: u16,
    errcode: &'static str,
    error: &'static str,
) -> Case {
    Case {
        name,
        method: "POST",
        path: "/_matrix/push/v1/notify",
        body: body.into(),
        status,
        errcode,
        error,
    }
}

fn with_device(device: serde_json::Value) -> String {
    json!({"notification": {"devices": [device]}}).to_string()
}

fn with_field(field: &str, value: serde_json::Value) -> String {
    let mut n = json!({"devices": [{"app_id": "a", "pushkey": "k"}]});
    n[field] = value;
    json!({ "notification": n }).to_string()
}

#[tokio::test]
async fn malformed_requests_get_exact_matrix_errors() {
    let gw = spawn(NO_APPS).await;
    let ok_device = json!({"app_id": "a", "pushkey": "k"});
    let many: Vec<_> = (0..101)
        .map(|i| json!({"app_id": "a", "pushkey": format!("k{i}")}))
        .collect();
    let cases = vec![
        case(
            "not json",
            "hello",
            400,
            "M_NOT_JSON",
            "request body is not valid JSON: expected value at line 1 column 1",
        ),
        case(
            "empty body",
            "",
            400,
            "M_NOT_JSON",
            "request body is not valid JSON: EOF while parsing a value at line 1 column 0",
        ),
        case(
            "truncated",
            r#"{"notification":"#,
            400,
            "M_NOT_JSON",
            "request body is not valid JSON: EOF while parsing a value at line 1 column 16",
        ),
        case(
            "NaN",
            r#"{"notification": NaN}"#,
            400,
            "M_NOT_JSON",
            "request body is not valid JSON: expected value at line 1 column 18",
        ),
        case(
            "Infinity",
            r#"{"notification": {"counts": {"unread": Infinity}}}"#,
            400,
            "M_NOT_JSON",
            "request body is not valid JSON: expected value at line 1 column 40",
        ),
        case(
            "array body",
            "[]",
            400,
            "M_NOT_JSON",
            "request body is not valid JSON: the body must be a JSON object",
        ),
        case(
            "number body",
            "42",
            400,
            "M_NOT_JSON",
            "request body is not valid JSON: the body must be a JSON object",
        ),
        case(
            "string body",
            r#""notify""#,
            400,
            "M_NOT_JSON",
            "request body is not valid JSON: the body must be a JSON object",
        ),
        case(
            "no notification",
            "{}",
            400,
            "M_BAD_JSON",
            "notification: required, but missing",
        ),
        case(
            "notification is a list",
            r#"{"notification": []}"#,
            400,
            "M_BAD_JSON",
            "notification: must be an object",
        ),
        case(
            "no devices",
            r#"{"notification": {}}"#,
            400,
            "M_BAD_JSON",
            "notification.devices: required, but missing",
        ),
        case(
            "null devices",
            r#"{"notification": {"devices": null}}"#,
            400,
            "M_BAD_JSON",
            "notification.devices: required, but missing",
        ),
        case(
            "empty devices",
            r#"{"notification": {"devices": []}}"#,
            400,
            "M_BAD_JSON",
            "notification.devices: must not be empty",
        ),
        case(
            "devices not a list",
            r#"{"notification": {"devices": {}}}"#,
            400,
            "M_BAD_JSON",
            "notification.devices: must be a list",
        ),
        case(
            "device not an object",
            r#"{"notification": {"devices": ["a"]}}"#,
            400,
            "M_BAD_JSON",
            "notification.devices[0]: must be an object",
        ),
        case(
            "device without app_id",
            with_device(json!({"pushkey": "k"})),
            400,
            "M_BAD_JSON",
            "notification.devices[0].app_id: required, but missing",
        ),
        case(
            "app_id a number",
            with_device(json!({"app_id": 1, "pushkey": "k"})),
            400,
            "M_BAD_JSON",
            "notification.devices[0].app_id: must be a string",
        ),
        case(
            "device without pushkey",
            with_device(json!({"app_id": "a"})),
            400,
            "M_BAD_JSON",
            "notification.devices[0].pushkey: required, but missing",
        ),
        case(
            "empty pushkey",
            with_device(json!({"app_id": "a", "pushkey": ""})),
            400,
            "M_BAD_JSON",
            "notification.devices[0].pushkey: must not be empty",
        ),
        case(
            "second device bad",
            json!({"notification": {"devices": [ok_device, {"app_id": "a", "pushkey": ["k"]}]}})
                .to_string(),
            400,
            "M_BAD_JSON",
            "notification.devices[1].pushkey: must be a string",
        ),
        case(
            "pushkey_ts a string",
            with_device(json!({"app_id": "a", "pushkey": "k", "pushkey_ts": "1"})),
            400,
            "M_BAD_JSON",
            "notification.devices[0].pushkey_ts: must be a non-negative integer",
        ),
        case(
            "pushkey_ts negative",
            with_device(json!({"app_id": "a", "pushkey": "k", "pushkey_ts": -5})),
            400,
            "M_BAD_JSON",
            "notification.devices[0].pushkey_ts: must be a non-negative integer",
        ),
        case(
            "data a string",
            with_device(json!({"app_id": "a", "pushkey": "k", "data": "x"})),
            400,
            "M_BAD_JSON",
            "notification.devices[0].data: must be an object",
        ),
        case(
            "tweaks a list",
            with_device(json!({"app_id": "a", "pushkey": "k", "tweaks": []})),
            400,
            "M_BAD_JSON",
            "notification.devices[0].tweaks: must be an object",
        ),
        case(
            "counts a number",
            with_field("counts", json!(3)),
            400,
            "M_BAD_JSON",
            "notification.counts: must be an object",
        ),
        case(
            "unread a string",
            with_field("counts", json!({"unread": "3"})),
            400,
            "M_BAD_JSON",
            "notification.counts.unread: must be a non-negative integer",
        ),
        case(
            "unread negative",
            with_field("counts", json!({"unread": -1})),
            400,
            "M_BAD_JSON",
            "notification.counts.unread: must be a non-negative integer",
        ),
        case(
            "missed_calls fractional",
            with_field("counts", json!({"missed_calls": 1.5})),
            400,
            "M_BAD_JSON",
            "notification.counts.missed_calls: must be a non-negative integer",
        ),
        case(
            "prio a number",
            with_field("prio", json!(10)),
            400,
            "M_BAD_JSON",
            "notification.prio: must be a string (\"high\" or \"low\")",
        ),
        case(
            "user_is_target a string",
            with_field("user_is_target", json!("yes")),
            400,
            "M_BAD_JSON",
            "notification.user_is_target: must be true or false",
        ),
        case(
            "content a string",
            with_field("content", json!("hi")),
            400,
            "M_BAD_JSON",
            "notification.content: must be an object",
        ),
        case(
            "room_id a number",
            with_field("room_id", json!(7)),
            400,
            "M_BAD_JSON",
            "notification.room_id: must be a string",
        ),
        case(
            "event_id an object",
            with_field("event_id", json!({})),
            400,
            "M_BAD_JSON",
            "notification.event_id: must be a string",
        ),
        case(
            "too many devices",
            json!({"notification": {"devices": many}}).to_string(),
            400,
            "M_BAD_JSON",
            "notification.devices: 101 devices, at most 100 are accepted per request",
        ),
        case(
            "oversize body",
            format!(
                r#"{{"notification": {{"pad": "{}"}}}}"#,
                "x".repeat(200 * 1024)
            ),
            413,
            "M_TOO_LARGE",
            "request body is larger than 131072 bytes",
        ),
        case(
            "pushkey one byte over 512",
            with_device(json!({"app_id": "a", "pushkey": "k".repeat(513)})),
            400,
            "M_BAD_JSON",
            "notification.devices[0].pushkey: longer than 512 bytes",
        ),
        case(
            "pushkey over 512 bytes in fewer characters",
            with_device(json!({"app_id": "a", "pushkey": "é".repeat(257)})),
            400,
            "M_BAD_JSON",
            "notification.devices[0].pushkey: longer than 512 bytes",
        ),
        case(
            "app_id one character over 64",
            json!({"notification": {"devices": [
                {"app_id": "a", "pushkey": "k"},
                {"app_id": "é".repeat(65), "pushkey": "k"}
            ]}})
            .to_string(),
            400,
            "M_BAD_JSON",
            "notification.devices[1].app_id: longer than 64 characters",
        ),
        case(
            "event_id one byte over 255",
            with_field("event_id", json!(format!("${}", "e".repeat(255)))),
            400,
            "M_BAD_JSON",
            "notification.event_id: longer than 255 bytes",
        ),
        case(
            "id one byte over 255",
            with_field("id", json!(format!("${}", "e".repeat(255)))),
            400,
            "M_BAD_JSON",
            "notification.id: longer than 255 bytes",
        ),
        case(
            "room_id one byte over 255",
            with_field("room_id", json!(format!("!{}", "r".repeat(255)))),
            400,
            "M_BAD_JSON",
            "notification.room_id: longer than 255 bytes",
        ),
        Case {
            name: "unknown path",
            method: "POST",
            path: "/_matrix/push/v2/notify",
            body: "{}".into(),
            status: 404,
            errcode: "M_UNRECOGNIZED",
            error: "unrecognized request: /_matrix/push/v2/notify",
        },
        Case {
            name: "root path",
            method: "GET",
            path: "/",
            body: String::new(),
            status: 404,
            errcode: "M_UNRECOGNIZED",
            error: "unrecognized request: /",
        },
        Case {
            name: "DELETE notify",
            method: "DELETE",
            path: "/_matrix/push/v1/notify",
            body: String::new(),
            status: 405,
            errcode: "M_UNRECOGNIZED",
            error: "method not allowed here; allowed: GET, HEAD, POST, OPTIONS",
        },
        Case {
            name: "PUT notify",
            method: "PUT",
            path: "/_matrix/push/v1/notify",
            body: "{}".into(),
            status: 405,
            errcode: "M_UNRECOGNIZED",
            error: "method not allowed here; allowed: GET, HEAD, POST, OPTIONS",
        },
        Case {
            name: "POST health",
            method: "POST",
            path: "/health",
            body: "{}".into(),
            status: 405,
            errcode: "M_UNRECOGNIZED",
            error: "method not allowed here; allowed: GET, HEAD",
        },
    ];
    assert!(cases.len() >= 25);
    let mut failures = Vec::new();
    for c in &cases {
        let a = gw.request(c.method, c.path, c.body.clone()).await;
        let expected = json!({"errcode": c.errcode, "error": c.error});
        if a.status != c.status || a.body != expected {
            failures.push(format!(
                "{}: got {} {}, expected {} {}",
                c.name, a.status, a.body, c.status, expected
            ));
        }
        assert_eq!(a.headers["content-type"], "application/json", "{}", c.name);
        if c.status == 405 {
            let allow = if c.path == "/health" {
                "GET, HEAD"
            } else {
                "GET, HEAD, POST, OPTIONS"
            };
            assert_eq!(a.headers["allow"], allow, "{}", c.name);
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn fields_of_the_maximum_length_are_accepted() {
    let gw = spawn(NO_APPS).await;
    // 512-byte pushkey, 64-character app id (128 bytes), 255-byte ids: all accepted.
    let pushkey = "k".repeat(512);
    let body = json!({"notification": {
        "event_id": format!("${}", "e".repeat(254)),
        "room_id": format!("!{}", "r".repeat(254)),
        "devices": [{"app_id": "é".repeat(64), "pushkey": pushkey}]
    }});
    let a = gw.notify(&body).await;
    assert_eq!((a.status, a.body), (200, json!({ "rejected": [pushkey] })));
    let body = json!({"notification": {
        "id": format!("${}", "e".repeat(254)),
        "devices": [{"app_id": "a", "pushkey": "k"}]
    }});
    let a = gw.notify(&body).await;
    assert_eq!((a.status, a.body), (200, json!({ "rejected": ["k"] })));
}

#[tokio::test]
async fn lenient_where_homeservers_differ() {
    let gw = spawn(NO_APPS).await;
    // Unknown prio, unknown fields, nulls and a trailing slash are all accepted.
    let body = json!({"notification": {
        "prio": "urgent", "future_field": {"x": 1}, "room_name": null, "counts": {"unread": null},
        "devices": [{"app_id": "unknown.app", "pushkey": "key-1", "tweaks": null, "data": null, "extra": 1}]
    }});
    let a = gw
        .request("POST", "/_matrix/push/v1/notify/", body.to_string())
        .await;
    assert_eq!((a.status, a.body), (200, json!({"rejected": ["key-1"]})));
}

#[tokio::test]
async fn health_answers_get_and_head() {
    let gw = spawn(NO_APPS).await;
    let a = gw.request("GET", "/health", "").await;
    assert_eq!((a.status, a.body), (200, json!({"status": "ok"})));
    let a = gw.request("HEAD", "/health", "").await;
    assert_eq!(a.status, 200);
    assert!(a.headers.contains_key("x-request-id"));
}
