//! Running it for real, with real gateway processes and signals: `SIGTERM`
//! under load answers every accepted request and exits; the shutdown deadline
//! cuts what is still stuck; `SIGHUP` reloads the apps while a load runs
//! without losing a request, and refuses a broken config.

mod process;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::webpush::{Behaviour, FakeWebPush, Subscription};

use process::Gateway;

fn body(event: &str, app_id: &str, endpoint: &str, sub: &Subscription) -> String {
    json!({"notification": {
        "event_id": event, "room_id": "!r:example.org", "type": "m.room.message",
        "sender": "@a:example.org", "counts": {"unread": 1},
        "devices": [{"app_id": app_id, "pushkey": sub.p256dh(),
                     "data": {"endpoint": endpoint, "auth": sub.auth()}}]
    }})
    .to_string()
}

fn client() -> reqwest::Client {
    pushgate::net::install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client")
}

/// Posts one notification; the status and body, or the transport error.
async fn post(client: &reqwest::Client, addr: &str, body: String) -> Result<(u16, Value), String> {
    let resp = client
        .post(format!("http://{addr}/_matrix/push/v1/notify"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let v = resp.json::<Value>().await.map_err(|e| e.to_string())?;
    Ok((status, v))
}

#[tokio::test]
async fn sigterm_under_load_answers_every_accepted_request_then_exits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = format!(
        "store:\n  sqlite:\n    path: '{}'\n",
        dir.path().join("t.db").display()
    );
    let mut gw = Gateway::start(&process::write_config(dir.path(), "gw", &store));
    let fake = FakeWebPush::start().await;
    let (endpoint, sub) = fake.subscribe("slow");
    fake.set_behaviour("slow", Behaviour::Delay(Duration::from_millis(1500), 201));

    let client = client();
    let requests: Vec<_> = (0..40)
        .map(|i| {
            let (client, addr) = (client.clone(), gw.addr.clone());
            let body = body(&format!("$e{i}"), "org.example.web", &endpoint, &sub);
            tokio::spawn(async move { post(&client, &addr, body).await })
        })
        .collect();
    // Every request is in flight (its push upstream, which takes 1.5 s to
    // answer, within the 2 s answer budget) when SIGTERM arrives.
    assert_eq!(fake.wait_for(40, Duration::from_secs(20)).await.len(), 40);
    gw.signal("TERM");
    for r in requests {
        let answer = r.await.expect("task");
        assert_eq!(answer, Ok((200, json!({"rejected": []}))));
    }
    assert_eq!(fake.accepted_by_event().len(), 40);
    let code = tokio::task::spawn_blocking(move || {
        let code = gw.wait_exit(Duration::from_secs(10));
        (code, gw)
    })
    .await
    .expect("wait");
    assert_eq!(code.0, Some(0), "exit code");
    // Nobody listens any more.
    let after = post(
        &client,
        &code.1.addr,
        body("$late", "org.example.web", &endpoint, &sub),
    )
    .await;
    assert!(after.is_err(), "{after:?}");
}

#[tokio::test]
async fn shutdown_timeout_cuts_requests_stuck_upstream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = "store: none\ndispatch:\n  upstream_timeout: 30s\n";
    let config = process::write_config(dir.path(), "gw", extra);
    // write_config writes the `http` section: add the deadline to it.
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace("  port: 0\n", "  port: 0\n  shutdown_timeout: 1s\n"),
    )
    .expect("config");
    let mut gw = Gateway::start(&config);
    let fake = FakeWebPush::start().await;
    let (endpoint, sub) = fake.subscribe("stuck");
    fake.set_behaviour("stuck", Behaviour::Stall);

    let (client, addr) = (client(), gw.addr.clone());
    let stuck = tokio::spawn(async move {
        post(
            &client,
            &addr,
            body("$s", "org.example.web", &endpoint, &sub),
        )
        .await
    });
    // Stuck once its push is upstream.
    assert_eq!(fake.wait_for(1, Duration::from_secs(10)).await.len(), 1);
    let signalled = Instant::now();
    gw.signal("TERM");
    let (code, took) = tokio::task::spawn_blocking(move || {
        let code = gw.wait_exit(Duration::from_secs(10));
        let took = signalled.elapsed();
        (code, (took, gw))
    })
    .await
    .expect("wait");
    assert_eq!(code, Some(0));
    assert!(
        took.0 >= Duration::from_millis(900) && took.0 < Duration::from_secs(4),
        "exited {:?} after SIGTERM",
        took.0
    );
    assert!(took
        .1
        .wait_log(
            "requests still in flight at http.shutdown_timeout were cut",
            Duration::from_secs(1)
        )
        .is_some());
    // The cut request gets no answer (the homeserver retries it).
    assert!(stuck.await.expect("task").is_err());
}

#[tokio::test]
async fn sighup_reloads_apps_under_load_without_losing_a_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = process::write_config(dir.path(), "gw", "store: none\n");
    let original = std::fs::read_to_string(&config).expect("config");
    let gw = Arc::new(Gateway::start(&config));
    let fake = FakeWebPush::start().await;
    let (endpoint, sub) = fake.subscribe("load");
    let (new_endpoint, new_sub) = fake.subscribe("new");
    let client = client();

    // A steady load on the app that stays, for the whole test (bounded: 3,000 requests or 30 s).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..8)
        .map(|w| {
            let (client, gw, stop, sent) = (client.clone(), gw.clone(), stop.clone(), sent.clone());
            let (endpoint, sub) = (endpoint.clone(), sub.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let mut bad = Vec::new();
                for i in 0..375 {
                    if stop.load(Ordering::SeqCst) || started.elapsed() > Duration::from_secs(30) {
                        break;
                    }
                    let b = body(&format!("$w{w}-{i}"), "org.example.web", &endpoint, &sub);
                    let r = post(&client, &gw.addr, b).await;
                    sent.fetch_add(1, Ordering::SeqCst);
                    if r != Ok((200, json!({"rejected": []}))) {
                        bad.push(r);
                    }
                }
                bad
            })
        })
        .collect();

    let new_device = |event: &str| body(event, "org.example.new", &new_endpoint, &new_sub);
    let before = post(&client, &gw.addr, new_device("$n0")).await;
    assert_eq!(before, Ok((200, json!({"rejected": [new_sub.p256dh()]}))));

    // Add an app and reload.
    let key = dir.path().join("gw-vapid.pem");
    let added = format!(
        "{original}  org.example.new:\n    type: webpush\n    vapid_private_key: '{}'\n    vapid_contact_email: ops@example.org\n    allow_private_endpoints: true\n    allow_http_endpoints: true\n",
        key.display()
    )
    .replace("store: none\n", "");
    std::fs::write(&config, format!("{added}store: none\n")).expect("config");
    gw.signal("HUP");
    let line = gw
        .wait_log("reloaded", Duration::from_secs(5))
        .expect("reload logged");
    assert_eq!(line["added"], "org.example.new");
    assert_eq!(line["kept"], "org.example.web");
    let now = post(&client, &gw.addr, new_device("$n1")).await;
    assert_eq!(now, Ok((200, json!({"rejected": []}))));

    // A broken config is refused and the running one kept.
    std::fs::write(
        &config,
        format!("{added}  broken.app:\n    type: carrier-pigeon\nstore: none\n"),
    )
    .expect("config");
    gw.signal("HUP");
    assert!(gw
        .wait_log(
            "reload refused, the running config is kept",
            Duration::from_secs(5)
        )
        .is_some());
    let still = post(&client, &gw.addr, new_device("$n2")).await;
    assert_eq!(still, Ok((200, json!({"rejected": []}))));

    // Remove the app again.
    std::fs::write(&config, &original).expect("config");
    gw.signal("HUP");
    let line = gw
        .wait_log_nth("reloaded", 2, Duration::from_secs(5))
        .expect("second reload logged");
    assert_eq!(line["removed"], "org.example.new");
    let gone = post(&client, &gw.addr, new_device("$n3")).await;
    assert_eq!(gone, Ok((200, json!({"rejected": [new_sub.p256dh()]}))));

    stop.store(true, Ordering::SeqCst);
    let mut bad = Vec::new();
    for l in load {
        bad.extend(l.await.expect("load task"));
    }
    assert!(bad.is_empty(), "requests failed during reloads: {bad:?}");
    let sent = sent.load(Ordering::SeqCst);
    assert!(sent >= 16, "the load ran ({sent} requests)");
    let got = fake.wait_accepted(sent + 2, Duration::from_secs(5)).await;
    let load_pushes = got.keys().filter(|e| e.starts_with("$w")).count();
    assert_eq!(load_pushes, sent, "every load request delivered once");
    assert!(got.values().all(|&n| n == 1), "a push was doubled");
}

#[tokio::test]
async fn otlp_export_carries_the_span_tree_of_a_request() {
    use testkit::otlp::FakeCollector;
    let dir = tempfile::tempdir().expect("tempdir");
    let collector = FakeCollector::start().await;
    let extra = format!(
        "store: none\ntracing:\n  otlp:\n    enabled: true\n    endpoint: '{}'\n    service_name: pushgate-test\n",
        collector.endpoint()
    );
    let mut gw = Gateway::start(&process::write_config(dir.path(), "gw", &extra));
    let fake = FakeWebPush::start().await;
    let (endpoint, sub) = fake.subscribe("traced");
    let resp = client()
        .post(format!("http://{}/_matrix/push/v1/notify", gw.addr))
        .header("x-request-id", "hs-req-42")
        .body(body("$traced", "org.example.web", &endpoint, &sub))
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("hs-req-42")
    );
    // Spans are exported in batches; stopping the gateway flushes the last one.
    gw.signal("TERM");
    let gw = tokio::task::spawn_blocking(move || {
        assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
        gw
    })
    .await
    .expect("exit");
    let spans = collector.wait_for(3, Duration::from_secs(5)).await;
    let find = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} span in {spans:#?}"))
            .clone()
    };
    let (notify, dispatch, upstream) = (find("notify"), find("dispatch"), find("upstream"));
    assert_eq!(notify.service, "pushgate-test");
    assert_eq!(notify.parent_span_id, "", "notify is the root");
    assert_eq!(notify.attributes["request_id"], "hs-req-42");
    assert_eq!(dispatch.parent_span_id, notify.span_id);
    assert_eq!(dispatch.attributes["app"], "org.example.web");
    assert_eq!(dispatch.attributes["outcome"], "delivered");
    assert_eq!(upstream.parent_span_id, dispatch.span_id);
    assert_eq!(upstream.attributes["service"], "webpush");
    assert_eq!(upstream.attributes["http.status_code"], "201");
    assert!(
        [&dispatch, &upstream]
            .iter()
            .all(|s| s.trace_id == notify.trace_id),
        "one trace"
    );
    drop(gw);
}

/// The gateway does not re-execute itself to tune its allocator: the serving
/// process has the environment and arguments it was started with.
#[tokio::test]
async fn serve_runs_in_the_environment_it_was_given() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = process::write_config(dir.path(), "gw", "store: none\n");
    let gateway = Gateway::start(&config);
    let environ = std::fs::read(format!("/proc/{}/environ", gateway.pid())).expect("environ");
    let ours: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("MIMALLOC_"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let theirs: Vec<String> = environ
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .filter(|v| v.starts_with("MIMALLOC_"))
        .collect();
    assert_eq!(theirs, ours, "no allocator variable added");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", gateway.pid())).expect("cmdline");
    assert!(String::from_utf8_lossy(&cmdline).contains(&config.display().to_string()));
}

/// The "Max open files" soft and hard limits of a process, as `/proc` writes them.
fn fd_limits(pid: &str) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files");
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_owned(), fields[4].to_owned())
}

/// Started with a soft open-file limit of 512 (as many machines start a
/// process with 1,024), the gateway raises it to the hard limit and says so:
/// else `accept` fails with `EMFILE` below `limits.max_connections`.
#[tokio::test]
async fn serve_raises_its_open_file_limit_to_the_hard_limit() {
    let (_, hard) = fd_limits("self");
    assert_ne!(
        hard, "512",
        "the hard limit must be above 512 for this test"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let config = process::write_config(dir.path(), "gw", "store: none\n");
    let gateway = Gateway::start_with_fd_limits(&config, "512", &hard);
    assert_eq!(fd_limits(&gateway.pid().to_string()), (hard.clone(), hard));
    let log = gateway.log.lock().expect("log");
    let raised = log
        .iter()
        .find(|l| l["message"] == "open-file limit raised to the hard limit")
        .unwrap_or_else(|| panic!("no line on the limit in {log:?}"));
    assert_eq!(raised["from"], 512);
    assert_eq!(raised["level"], "INFO");
    assert!(
        !log.iter().any(|l| l["level"] == "WARN"),
        "no warning when the limit is enough: {log:?}"
    );
}

/// With a hard limit of 1,024 the default `limits.max_connections` (4,096)
/// cannot be reached: the gateway warns, naming the key and what to raise.
#[tokio::test]
async fn serve_warns_when_the_open_file_limit_is_below_the_connection_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = process::write_config(dir.path(), "gw", "store: none\n");
    let gateway = Gateway::start_with_fd_limits(&config, "1024", "1024");
    let log = gateway.log.lock().expect("log");
    let warning = log
        .iter()
        .find(|l| l["level"] == "WARN")
        .unwrap_or_else(|| panic!("no warning in {log:?}"));
    assert_eq!(
        warning["message"],
        "the open-file limit is below limits.max_connections + 256: past it connections wait \
         unanswered in the kernel's backlog; raise the limit (LimitNOFILE, ulimit -n) or lower \
         limits.max_connections"
    );
    assert_eq!(
        (&warning["limit"], &warning["needed"]),
        (&json!("1024"), &json!(4352))
    );
    assert!(!log
        .iter()
        .any(|l| l["message"] == "open-file limit raised to the hard limit"));
}

/// A `/notify` writes one INFO line: the access line, carrying the request's
/// summary; with the access log off, the summary line (`notify`) instead.
#[tokio::test]
async fn a_notify_writes_one_info_line_with_its_summary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeWebPush::start().await;
    let (endpoint, sub) = fake.subscribe("one-line");
    let with_access = process::write_config(dir.path(), "access", "store: none\n");
    let text = std::fs::read_to_string(&with_access)
        .expect("config")
        .replace(
            "  format: json\n",
            "  format: json\n  access:\n    enabled: false\n",
        );
    let without_access = dir.path().join("no-access.yaml");
    std::fs::write(&without_access, text).expect("config");
    for (config, message) in [(&with_access, "request"), (&without_access, "notify")] {
        let gw = Gateway::start(config);
        let resp = client()
            .post(format!("http://{}/_matrix/push/v1/notify", gw.addr))
            .header("x-request-id", "one-line-1")
            .body(body("$one", "org.example.web", &endpoint, &sub))
            .send()
            .await
            .expect("answer");
        assert_eq!(resp.status().as_u16(), 200);
        // Every line of the first request is written before its answer; a
        // second request's line marks the end of them in the log.
        assert_eq!(
            client()
                .post(format!("http://{}/_matrix/push/v1/notify", gw.addr))
                .header("x-request-id", "one-line-2")
                .body("{}")
                .send()
                .await
                .expect("answer")
                .status()
                .as_u16(),
            400
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        let log = loop {
            let log = gw.log.lock().expect("log").clone();
            if log.iter().any(|l| l["request_id"] == "one-line-2") || Instant::now() > deadline {
                break log;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let info: Vec<&Value> = log
            .iter()
            .filter(|l| l["request_id"] == "one-line-1" && l["level"] == "INFO")
            .collect();
        assert_eq!(info.len(), 1, "one INFO line: {info:#?}");
        let line = info[0];
        let fields = [
            "message",
            "status",
            "event_id",
            "app_ids",
            "devices",
            "delivered",
            "rejected",
            "failed",
            "duplicates",
            "queued",
            "unqueued",
        ];
        assert_eq!(
            fields.map(|f| line[f].clone()),
            [
                json!(message),
                json!(200),
                json!("$one"),
                json!("org.example.web"),
                json!(1),
                json!(1),
                json!(0),
                json!(0),
                json!(0),
                json!(0),
                json!(0),
            ],
            "{line}"
        );
        assert!(line.get("error").is_none(), "{line}");
        let refused = log
            .iter()
            .find(|l| l["request_id"] == "one-line-2" && l["level"] == "INFO")
            .expect("the refused request's line");
        assert_eq!(refused["status"], 400);
        assert!(
            refused["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{refused}"
        );
        assert!(refused.get("devices").is_none(), "{refused}");
        if message == "request" {
            assert_eq!(line["path"], "/_matrix/push/v1/notify");
            assert_eq!(line["client"], "127.0.0.1");
            assert!(line["duration_ms"].as_f64().is_some_and(|d| d >= 0.0));
        } else {
            assert!(line["elapsed_ms"].as_u64().is_some(), "{line}");
        }
    }
}

/// The access lines of a gateway's log (`message` "request"), once `n` are there.
fn access_lines(gw: &Gateway, n: usize) -> Vec<Value> {
    assert!(
        gw.wait_log_nth("request", n, Duration::from_secs(5))
            .is_some(),
        "{n} access line(s) logged"
    );
    gw.log
        .lock()
        .expect("log")
        .iter()
        .filter(|v| v["message"] == "request")
        .cloned()
        .collect()
}

/// GET `path` with the given request id and extra headers; the answer's status.
async fn get(addr: &str, path: &str, id: &str, headers: &[(&str, &str)]) -> u16 {
    let mut req = client()
        .get(format!("http://{addr}{path}"))
        .header("x-request-id", id);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("answered").status().as_u16()
}

#[tokio::test]
async fn access_log_names_the_client_with_and_without_x_forwarded_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = process::write_config(dir.path(), "plain", "store: none\n");
    let gw = Gateway::start(&plain);
    let forged = [("x-forwarded-for", "203.0.113.9, 198.51.100.7")];
    assert_eq!(get(&gw.addr, "/health", "plain-1", &forged).await, 200);
    assert_eq!(get(&gw.addr, "/nowhere", "plain-2", &[]).await, 404);
    let lines = access_lines(&gw, 2);
    let fields = |v: &Value| {
        (
            v["client"].clone(),
            v["method"].clone(),
            v["path"].clone(),
            v["status"].clone(),
            v["request_id"].clone(),
            v["level"].clone(),
        )
    };
    // Without `x_forwarded_for` the header is not believed: the peer is the client.
    assert_eq!(
        lines.iter().map(fields).collect::<Vec<_>>(),
        vec![
            (
                json!("127.0.0.1"),
                json!("GET"),
                json!("/health"),
                json!(200),
                json!("plain-1"),
                json!("INFO")
            ),
            (
                json!("127.0.0.1"),
                json!("GET"),
                json!("/nowhere"),
                json!(404),
                json!("plain-2"),
                json!("INFO")
            ),
        ]
    );
    assert!(lines
        .iter()
        .all(|l| l["duration_ms"].as_f64().is_some_and(|d| d >= 0.0)));
    drop(gw);

    let text = std::fs::read_to_string(&plain).expect("config").replace(
        "  format: json\n",
        "  format: json\n  access:\n    x_forwarded_for: true\n",
    );
    let behind_proxy = dir.path().join("proxied.yaml");
    std::fs::write(&behind_proxy, text).expect("config");
    let gw = Gateway::start(&behind_proxy);
    assert_eq!(get(&gw.addr, "/health", "proxied-1", &forged).await, 200);
    assert_eq!(get(&gw.addr, "/health", "proxied-2", &[]).await, 200);
    let lines = access_lines(&gw, 2);
    // The last hop is the one the operator's proxy added; without the header, the peer.
    assert_eq!(
        lines
            .iter()
            .map(|l| (l["request_id"].clone(), l["client"].clone()))
            .collect::<Vec<_>>(),
        vec![
            (json!("proxied-1"), json!("198.51.100.7")),
            (json!("proxied-2"), json!("127.0.0.1")),
        ]
    );
}

/// A gateway logging to a file (so not to standard error); killed when dropped.
struct FileLogged(std::process::Child);

impl Drop for FileLogged {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `path` holds a line containing `text`; that line.
fn wait_file_line(path: &std::path::Path, text: &str) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(content) = std::fs::read_to_string(path) {
            if let Some(line) = content.lines().find(|l| l.contains(text)) {
                return Some(line.to_owned());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Sygnal's `WatchedFileHandler` in `log.setup`: lines go to that file, and
/// after logrotate renames it, `SIGHUP` starts a new one.
#[tokio::test]
async fn a_file_handler_logs_to_its_file_and_reopens_it_after_sighup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("sygnal.log");
    let rotated = dir.path().join("sygnal.log.1");
    let base = process::write_config(dir.path(), "gw", "store: none\n");
    let text = std::fs::read_to_string(&base).expect("config").replace(
        "log:\n  level: info\n",
        &format!(
            "log:\n  setup:\n    version: 1\n    handlers:\n      file:\n        class: logging.handlers.WatchedFileHandler\n        filename: '{}'\n    root:\n      level: INFO\n      handlers: [file]\n",
            log.display()
        ),
    );
    std::fs::write(&base, text).expect("config");
    let child = std::process::Command::new(process::BIN)
        .arg("--config")
        .arg(&base)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starts");
    let gw = FileLogged(child);
    let ready = wait_file_line(&log, "\"listen\"").expect("the ready line is in the file");
    let ready: Value = serde_json::from_str(&ready).expect("a JSON line");
    let addr = ready["listen"].as_str().expect("listen").to_owned();

    assert_eq!(get(&addr, "/health", "before-rotation", &[]).await, 200);
    assert!(wait_file_line(&log, "before-rotation").is_some());
    std::fs::rename(&log, &rotated).expect("rotate");
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &gw.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(hup.success());
    // The reload line is the first one after the reopen: the new file exists.
    assert!(
        wait_file_line(&log, "reloaded").is_some(),
        "a new file after SIGHUP"
    );
    assert_eq!(get(&addr, "/health", "after-rotation", &[]).await, 200);
    assert!(wait_file_line(&log, "after-rotation").is_some());
    let old = std::fs::read_to_string(&rotated).expect("rotated");
    let new = std::fs::read_to_string(&log).expect("new");
    assert!(old.contains("before-rotation") && !old.contains("after-rotation"));
    assert!(!new.contains("before-rotation"));
    drop(gw);
}

/// The access lines of a text log as the gateway writes them (straight to the
/// log's queue, not through `tracing`: `telemetry::line`), in their place:
/// the main log's stream, or the access log's own file when it has one.
#[tokio::test]
async fn a_text_log_carries_the_access_lines_where_they_belong() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().expect("tempdir");
    let access_file = dir.path().join("access.log");
    for separate in [false, true] {
        let config = process::write_config(dir.path(), "text", "store: none\n");
        let access = if separate {
            format!("  access:\n    file: '{}'\n", access_file.display())
        } else {
            String::new()
        };
        let text = std::fs::read_to_string(&config)
            .expect("config")
            .replace("  format: json\n", &format!("  format: text\n{access}"));
        std::fs::write(&config, text).expect("config");
        let mut child = Command::new(process::BIN)
            .arg("--config")
            .arg(&config)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("pushgate starts");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let addr = loop {
            let line = lines.next().expect("a ready line").expect("read");
            if let Some((_, rest)) = line.split_once(" ready ") {
                let listen = rest.split(' ').find_map(|f| f.strip_prefix("listen="));
                break listen.expect("listen=").to_owned();
            }
        };
        let stderr = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().expect("lines").push(line);
            }
        });

        assert_eq!(
            get(&addr, "/health", "text-1", &[]).await,
            200,
            "health answers"
        );
        let refused = client()
            .post(format!("http://{addr}/_matrix/push/v1/notify"))
            .header("x-request-id", "text-2")
            .body("{}")
            .send()
            .await
            .expect("answer");
        assert_eq!(refused.status().as_u16(), 400);

        let written = || -> Vec<String> {
            if separate {
                std::fs::read_to_string(&access_file)
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_owned)
                    .collect()
            } else {
                stderr.lock().expect("lines").clone()
            }
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !written()
            .iter()
            .any(|l| l.contains("request_id=\"text-2\""))
        {
            assert!(
                Instant::now() < deadline,
                "access lines written: {:?}",
                written()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        let access: Vec<String> = written()
            .into_iter()
            .filter(|l| l.contains(" INFO request "))
            .collect();
        assert_eq!(access.len(), 2, "{access:#?}");
        // Each line: `<RFC 3339 time, microseconds, UTC>  INFO request <fields>`.
        let fields: Vec<String> = access
            .iter()
            .map(|l| {
                let (time, rest) = l.split_once(' ').expect("a time");
                assert_eq!(time.len(), 27, "{l}");
                assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{l}");
                // The duration varies: checked as a number, then left out.
                let (head, tail) = rest.split_once(" duration_ms=").expect("duration_ms");
                let (ms, tail) = tail.split_once(' ').expect("after duration_ms");
                assert!(ms.parse::<f64>().is_ok_and(|ms| ms >= 0.0), "{l}");
                format!("{head} {tail}")
            })
            .collect();
        assert_eq!(
            fields[0],
            " INFO request client=127.0.0.1 method=GET path=\"/health\" status=200 request_id=\"text-1\""
        );
        assert_eq!(
            fields[1],
            " INFO request client=127.0.0.1 method=POST path=\"/_matrix/push/v1/notify\" \
             status=400 request_id=\"text-2\" error=\"notification: required, but missing\""
        );
        if separate {
            let main = stderr.lock().expect("lines").clone();
            assert!(
                !main.iter().any(|l| l.contains(" INFO request ")),
                "no access line in the main log: {main:#?}"
            );
        }
    }
}

/// `log.access.file` takes the access lines out of the main log and into
/// their own file, JSON too (they were written nowhere: the access log's
/// filter answered no to `tracing::enabled!`, which asks with a hint).
#[tokio::test]
async fn json_access_lines_go_to_the_access_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let access_file = dir.path().join("access.json");
    let config = process::write_config(dir.path(), "json-access", "store: none\n");
    let text = std::fs::read_to_string(&config).expect("config").replace(
        "  format: json\n",
        &format!(
            "  format: json\n  access:\n    file: '{}'\n",
            access_file.display()
        ),
    );
    std::fs::write(&config, text).expect("config");
    let gw = Gateway::start(&config);
    assert_eq!(get(&gw.addr, "/health", "json-1", &[]).await, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let text = std::fs::read_to_string(&access_file).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains("json-1")) {
            break serde_json::from_str::<Value>(l).expect("a JSON line");
        }
        assert!(
            Instant::now() < deadline,
            "no access line in the file: {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        [
            &line["message"],
            &line["path"],
            &line["status"],
            &line["level"]
        ],
        [
            &json!("request"),
            &json!("/health"),
            &json!(200),
            &json!("INFO")
        ]
    );
    let main = gw.log.lock().expect("log").clone();
    assert!(
        !main.iter().any(|l| l["message"] == "request"),
        "no access line in the main log"
    );
}
