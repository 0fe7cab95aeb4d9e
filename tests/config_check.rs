//! `pushgate check-config` on a real Sygnal config using every key, on the
//! shipped example, on broken configs (every problem listed with its key
//! path), and the config file lookup order.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_pushgate");

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn check(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir).arg("check-config").args(args);
    for var in ["PUSHGATE_CONF", "SYGNAL_CONF", "HTTPS_PROXY", "https_proxy"] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Writes real key files into `dir`: a .p8, a cert+key PEM, a service account, a VAPID key.
fn write_keys(dir: &Path) {
    use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
    let p8 = p256::SecretKey::random(&mut rand_core::OsRng)
        .to_pkcs8_pem(LineEnding::LF)
        .expect("pem");
    std::fs::write(dir.join("AuthKey_ABC1234567.p8"), p8.as_bytes()).expect("p8");
    std::fs::write(dir.join("vapid.pem"), p8.as_bytes()).expect("vapid");
    // The form py_vapid also reads: the key's DER, base64url, no PEM armour.
    let der = p256::SecretKey::from_pkcs8_pem(&p8)
        .expect("reread")
        .to_pkcs8_der()
        .expect("der");
    std::fs::write(
        dir.join("vapid.der.b64"),
        format!("{}\n", base64_url(der.as_bytes())),
    )
    .expect("vapid der");
    let ca = testkit::tls::TestCa::new();
    std::fs::write(
        dir.join("apns-cert.pem"),
        ca.client_cert("com.example.myapp").combined_pem(),
    )
    .expect("cert");
    // A certificate with somebody else's key.
    let (a, b) = (ca.client_cert("a"), ca.client_cert("b"));
    std::fs::write(
        dir.join("mismatched.pem"),
        format!("{}{}", a.cert_pem, b.key_pem),
    )
    .expect("mismatched");
    std::fs::write(
        dir.join("expiring.pem"),
        ca.client_cert_expiring("soon", 10 * 24 + 12).combined_pem(),
    )
    .expect("expiring");
    std::fs::write(
        dir.join("expired.pem"),
        ca.client_cert_expiring("old", -48).combined_pem(),
    )
    .expect("expired");
    let sa = serde_json::json!({
        "type": "service_account", "project_id": "example-project",
        "client_email": "push@example-project.iam.gserviceaccount.com",
        "private_key": include_str!("../testkit/keys/test-service-account-key.pem"),
        "token_uri": "https://oauth2.googleapis.com/token"
    });
    std::fs::write(dir.join("service-account.json"), sa.to_string()).expect("sa");
    let mut ec = sa.clone();
    ec["private_key"] = serde_json::json!(p8.as_str());
    std::fs::write(dir.join("sa-ec.json"), ec.to_string()).expect("sa");
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    URL_SAFE_NO_PAD.encode(bytes)
}

fn write_config(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, yaml.replace("{dir}", &dir.display().to_string())).expect("write");
    path
}

#[test]
fn a_full_sygnal_config_is_accepted_with_clear_warnings() {
    let dir = tempfile::tempdir().expect("dir");
    write_keys(dir.path());
    let template = include_str!("data/config/sygnal-full.yaml");
    let file = write_config(dir.path(), "sygnal.yaml", template);
    let f = file.display();
    let r = check(dir.path(), &["-c", &file.display().to_string()], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        format!("{f}: OK (5 app(s): 2 apns, 1 gcm, 2 webpush)\n")
    );
    assert_eq!(
        r.stderr,
        format!(
            "{f}: warning: log.setup: parts of this Python logging setup have no meaning for pushgate and are ignored: formatters.normal (lines are formatted by `log.format`: text or json)\n\
             {f}: warning: metrics.sentry: sentry is not supported by pushgate (OpenTelemetry tracing replaces it: see `tracing.otlp`); ignored\n\
             {f}: warning: metrics.opentracing: opentracing is not supported by pushgate (OpenTelemetry tracing replaces it: see `tracing.otlp`); ignored\n"
        )
    );
}

#[test]
fn the_shipped_example_is_valid() {
    let root = env!("CARGO_MANIFEST_DIR");
    let r = check(Path::new(root), &["-c", "examples/pushgate.yaml"], &[]);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (0, "examples/pushgate.yaml: OK (1 app(s): 1 webpush)\n", "")
    );
}

/// Runs check-config on `yaml` and returns the problem lines without the file prefix.
fn problems(yaml: &str) -> (i32, Vec<String>) {
    let dir = tempfile::tempdir().expect("dir");
    write_keys(dir.path());
    std::fs::write(dir.path().join("not-a-key.pem"), "hello").expect("junk");
    let file = write_config(dir.path(), "c.yaml", yaml);
    let r = check(dir.path(), &["-c", &file.display().to_string()], &[]);
    let prefix = format!("{}: ", file.display());
    let lines = r
        .stderr
        .lines()
        .map(|l| {
            l.strip_prefix(&prefix)
                .unwrap_or(l)
                .replace(&dir.path().display().to_string(), "{dir}")
        })
        .collect();
    (r.code, lines)
}

#[test]
fn broken_configs_list_every_problem_with_its_key_path() {
    let vapid = "    vapid_private_key: {dir}/vapid.pem\n    vapid_contact_email: a@b\n";
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        ("top level a list", "- a\n- b\n".into(), vec!["error: the top level must be a mapping of keys", "1 error(s); the gateway would not start"]),
        ("unknown type", "apps:\n  a:\n    type: pigeon\n".into(), vec!["error: apps.a.type: unknown type `pigeon`; expected apns, gcm (or fcm), webpush or unifiedpush", "1 error(s); the gateway would not start"]),
        ("python class", "apps:\n  a:\n    type: mypkg.pushkins.MyPushkin\n".into(), vec!["error: apps.a.type: `mypkg.pushkins.MyPushkin` looks like a Python pushkin class; plugins are not supported, use apns, gcm, webpush or unifiedpush", "1 error(s); the gateway would not start"]),
        ("apns cert without key", "apps:\n  a:\n    type: apns\n    certfile: {dir}/not-a-key.pem\n".into(), vec!["error: apps.a.certfile: `{dir}/not-a-key.pem`: holds no certificate (expected a PEM file with the certificate and its private key)", "1 error(s); the gateway would not start"]),
        ("apns cert with another key", "apps:\n  a:\n    type: apns\n    certfile: {dir}/mismatched.pem\n".into(), vec!["error: apps.a.certfile: `{dir}/mismatched.pem`: the private key does not belong to the certificate", "1 error(s); the gateway would not start"]),
        ("apns cert expired", "apps:\n  a:\n    type: apns\n    certfile: {dir}/expired.pem\n".into(), vec!["<expired>", "1 error(s); the gateway would not start"]),
        ("apns token auth incomplete", "apps:\n  a:\n    type: apns\n    keyfile: {dir}/AuthKey_ABC1234567.p8\n".into(), vec![
            "error: apps.a.key_id: required with token auth (`keyfile`)",
            "error: apps.a.team_id: required with token auth (`keyfile`)",
            "error: apps.a.topic: required with token auth (`keyfile`)",
            "3 error(s); the gateway would not start",
        ]),
        ("apns keyfile not EC", "apps:\n  a:\n    type: apns\n    keyfile: {dir}/not-a-key.pem\n    key_id: K\n    team_id: T\n    topic: t\n".into(), vec!["error: apps.a.keyfile: `{dir}/not-a-key.pem` is not an EC P-256 private key in PKCS#8 PEM (an Apple .p8 key)", "1 error(s); the gateway would not start"]),
        ("apns keyfile missing", "apps:\n  a:\n    type: apns\n    keyfile: {dir}/nope.p8\n    key_id: K\n    team_id: T\n    topic: t\n".into(), vec!["error: apps.a.keyfile: cannot read `{dir}/nope.p8`: No such file or directory (os error 2)", "1 error(s); the gateway would not start"]),
        ("gcm legacy by api_key", "apps:\n  a:\n    type: gcm\n    api_key: AIza\n".into(), vec!["error: apps.a.api_version: no api_version means `legacy`; Google shut down the legacy FCM API (api_key) in 2024; use the HTTP v1 API: `api_version: v1`, `project_id: <Firebase project id>` and `service_account_file: <path to the service-account JSON key>`", "1 error(s); the gateway would not start"]),
        ("gcm legacy explicit", "apps:\n  a:\n    type: fcm\n    api_version: legacy\n".into(), vec!["error: apps.a.api_version: Google shut down the legacy FCM API (api_key) in 2024; use the HTTP v1 API: `api_version: v1`, `project_id: <Firebase project id>` and `service_account_file: <path to the service-account JSON key>`", "1 error(s); the gateway would not start"]),
        ("gcm service account with an EC key", "apps:\n  a:\n    type: gcm\n    api_version: v1\n    project_id: p\n    service_account_file: {dir}/sa-ec.json\n".into(), vec!["error: apps.a.service_account_file: `{dir}/sa-ec.json`: private_key is not a usable RSA key in PKCS#8 PEM (WrongAlgorithm)", "1 error(s); the gateway would not start"]),
        ("gcm service account incomplete", "apps:\n  a:\n    type: gcm\n    api_version: v1\n    project_id: p\n    service_account_file: {dir}/vapid.pem\n".into(), vec!["error: apps.a.service_account_file: `{dir}/vapid.pem` is not a JSON service-account key", "1 error(s); the gateway would not start"]),
        ("webpush without key", "apps:\n  a:\n    type: webpush\n    vapid_contact_email: a@b\n".into(), vec!["error: apps.a.vapid_private_key: required: the path of a P-256 private key PEM (create one with `pushgate gen-vapid`)", "1 error(s); the gateway would not start"]),
        ("webpush bad key", "apps:\n  a:\n    type: webpush\n    vapid_private_key: {dir}/not-a-key.pem\n    vapid_contact_email: a@b\n".into(), vec!["error: apps.a.vapid_private_key: `{dir}/not-a-key.pem` is not a P-256 private key in PEM (PKCS#8 or SEC1) or base64url DER", "1 error(s); the gateway would not start"]),
        ("wrong types", format!("http:\n  port: abc\napps:\n  a:\n    type: webpush\n    ttl: -1\n    allowed_endpoints: 5\n    inflight_request_limit: 0\n{vapid}"), vec![
            "error: http.port: expected a whole number from 0 to 65535, found a string",
            "error: apps.a.inflight_request_limit: expected a whole number from 1 to 1000000, found 0",
            "error: apps.a.allowed_endpoints: expected a list of strings, found a number",
            "error: apps.a.ttl: expected a whole number from 0 to 2419200, found -1",
            "4 error(s); the gateway would not start",
        ]),
        ("tls", "tls:\n  certificate: a.pem\n  private_key: b.pem\n".into(), vec!["error: tls.certificate: cannot read `a.pem`: No such file or directory (os error 2)", "warning: apps: no apps configured: every device will be rejected", "1 error(s); the gateway would not start"]),
        ("durations and sizes", "dispatch:\n  upstream_timeout: fast\nlimits:\n  max_body_size: 1TiB\n".into(), vec![
            "error: limits.max_body_size: expected a size in bytes: a number, or a string like \"512KiB\", \"1MiB\" or \"1GiB\"",
            "error: dispatch.upstream_timeout: expected a duration: seconds as a number, or a string like \"500ms\", \"2s\", \"10m\"",
            "warning: apps: no apps configured: every device will be rejected",
            "2 error(s); the gateway would not start",
        ]),
    ];
    let mut wrong = Vec::new();
    for (name, yaml, expected) in &cases {
        let (code, mut lines) = problems(yaml);
        // The expiry date is the test's own clock: check its shape, not the date.
        if expected.first() == Some(&"<expired>") {
            let prefix = "error: apps.a.certfile: `{dir}/expired.pem`: the certificate expired on ";
            if lines
                .first()
                .is_some_and(|l| l.starts_with(prefix) && l.ends_with("+00:00"))
            {
                lines[0] = "<expired>".into();
            }
        }
        if code != 1 || lines != *expected {
            wrong.push(format!(
                "{name}: exit {code}\n  got:      {lines:?}\n  expected: {expected:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn not_yaml_and_unknown_keys() {
    let (code, lines) = problems("apps: [unclosed\n");
    assert_eq!(code, 1);
    assert_eq!(
        lines[0],
        "invalid YAML: error: line 1 column 7: unclosed bracket '['"
    );
    assert_eq!(lines[lines.len() - 1], "  |       ^ unclosed bracket '['");
    let (code, lines) = problems("colour: blue\napps:\n  a:\n    type: webpush\n    vapid_private_key: {dir}/vapid.pem\n    vapid_contact_email: a@b\n    vapid_colour: red\n");
    assert_eq!(code, 0);
    assert_eq!(
        lines,
        vec![
            "warning: apps.a.vapid_colour: unknown key, ignored",
            "warning: colour: unknown key, ignored"
        ]
    );
}

#[test]
fn lookup_order() {
    let dir = tempfile::tempdir().expect("dir");
    write_keys(dir.path());
    let app = |id: &str| {
        format!("apps:\n  {id}:\n    type: webpush\n    vapid_private_key: {{dir}}/vapid.pem\n    vapid_contact_email: a@b\n")
    };
    let a = write_config(dir.path(), "a.yaml", &app("a"));
    let b = write_config(dir.path(), "b.yaml", &app("b"));
    write_config(dir.path(), "sygnal.yaml", &app("s"));
    let (a, b) = (a.display().to_string(), b.display().to_string());

    let r = check(
        dir.path(),
        &[],
        &[("PUSHGATE_CONF", &a), ("SYGNAL_CONF", &b)],
    );
    assert_eq!(r.stdout, format!("{a}: OK (1 app(s): 1 webpush)\n"));
    let r = check(dir.path(), &[], &[("SYGNAL_CONF", &b)]);
    assert_eq!(r.stdout, format!("{b}: OK (1 app(s): 1 webpush)\n"));
    let r = check(dir.path(), &[], &[]);
    assert_eq!(r.stdout, "sygnal.yaml: OK (1 app(s): 1 webpush)\n");
    write_config(dir.path(), "pushgate.yaml", &app("p"));
    let r = check(dir.path(), &[], &[]);
    assert_eq!(r.stdout, "pushgate.yaml: OK (1 app(s): 1 webpush)\n");
    // --config wins over everything.
    let r = check(dir.path(), &["-c", &b], &[("PUSHGATE_CONF", &a)]);
    assert_eq!(r.stdout, format!("{b}: OK (1 app(s): 1 webpush)\n"));

    let empty = tempfile::tempdir().expect("dir");
    let r = check(empty.path(), &[], &[]);
    assert_eq!(r.code, 1);
    assert_eq!(r.stderr, "no configuration file found (tried --config, $PUSHGATE_CONF, $SYGNAL_CONF, ./pushgate.yaml, ./sygnal.yaml)\n");
}

#[test]
fn a_certificate_close_to_expiry_is_a_warning() {
    let (code, lines) = problems("apps:\n  a:\n    type: apns\n    certfile: {dir}/expiring.pem\n");
    assert_eq!(code, 0);
    assert_eq!(lines, vec!["warning: apps.a.certfile: `{dir}/expiring.pem`: the certificate expires in 10 day(s); renew it"]);
}

#[test]
fn sygnal_s_documented_sample_config_is_accepted_unchanged() {
    let dir = tempfile::tempdir().expect("dir");
    write_keys(dir.path());
    let template = include_str!("data/config/sygnal-sample.yaml");
    // The file really has the comment blocks that broke the parser (> 32 lines in a mapping).
    let longest = template
        .lines()
        .fold((0, 0), |(run, max), l| {
            let run = if l.trim_start().starts_with('#') {
                run + 1
            } else {
                0
            };
            (run, max.max(run))
        })
        .1;
    assert!(longest > 32, "longest comment block: {longest}");
    let file = write_config(dir.path(), "sygnal.yaml", template);
    let f = file.display();
    let r = check(dir.path(), &["-c", &file.display().to_string()], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        format!("{f}: OK (4 app(s): 2 apns, 1 gcm, 1 webpush)\n")
    );
    assert_eq!(
        r.stderr,
        format!(
            "{f}: warning: log.setup: parts of this Python logging setup have no meaning for pushgate and are ignored: \
             formatters.normal, handlers.stderr (used by no logger pushgate has) \
             (lines are formatted by `log.format`: text or json)\n"
        )
    );
}

#[test]
fn unifiedpush_apps_are_accepted_with_every_key() {
    let dir = tempfile::tempdir().expect("dir");
    write_keys(dir.path());
    let ca = testkit::tls::TestCa::new();
    std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).expect("ca");
    let file = write_config(
        dir.path(),
        "up.yaml",
        "apps:
  chat.fluffy.fluffychat:
    type: unifiedpush
    allowed_endpoints: ['ntfy.example.org', '*.up.example.net:8443']
    ttl: 3600
    max_connections: 8
    allow_private_endpoints: false
    allow_http_endpoints: false
    ca_file: {dir}/ca.pem
    inflight_request_limit: 64
  '*':
    type: unifiedpush
    default_app: true
",
    );
    let f = file.display().to_string();
    let r = check(dir.path(), &["-c", &f], &[]);
    assert_eq!(
        (r.code, r.stdout, r.stderr),
        (
            0,
            format!("{f}: OK (2 app(s): 2 unifiedpush)\n"),
            String::new()
        )
    );
}

/// Sygnal's spellings that used to be refused: each accepted, with a warning where the
/// meaning needs one.
#[test]
fn values_sygnal_accepts_are_accepted() {
    let (code, lines) = problems(
        "apps:\n  a:\n    type: sygnal.apnspushkin.ApnsPushkin\n    certfile: {dir}/apns-cert.pem\n    keyfile: {dir}/AuthKey_ABC1234567.p8\n    key_id: K\n    team_id: T\n    platform: ''\n\
         \x20 b:\n    type: apns\n    keyfile: {dir}/AuthKey_ABC1234567.p8\n    key_id: K\n    team_id: T\n    topic: t\n    platform: prod\n\
         \x20 c:\n    type: sygnal.gcmpushkin.GcmPushkin\n    api_version: v1\n    project_id: p\n    service_account_file: {dir}/service-account.json\n\
         \x20 d:\n    type: sygnal.webpushpushkin.WebpushPushkin\n    vapid_private_key: {dir}/vapid.der.b64\n    vapid_contact_email: a@b\n\
         metrics:\n  prometheus:\n    enabled: true\n    address: ''\n\
         log:\n  access:\n    enabled: true\n    file: {dir}/access.log\n",
    );
    assert_eq!(
        (code, lines),
        (
            0,
            vec!["warning: apps.a: both `certfile` and `keyfile` are set: the certificate is used and `keyfile` ignored (as Sygnal does); remove one".to_owned()]
        )
    );
}

#[test]
fn each_problem_is_reported_once_and_typos_get_a_suggestion() {
    let cases: Vec<(&str, &str, i32, Vec<&str>)> = vec![
        (
            "legacy gcm: the keys after the error are not called unknown",
            "apps:\n  a:\n    type: gcm\n    project_id: p\n    service_account_file: {dir}/service-account.json\n    fcm_options: {}\n    max_connections: 3\n",
            1,
            vec![
                "error: apps.a.api_version: Google shut down the legacy FCM API (api_key) in 2024; use the HTTP v1 API: `api_version: v1`, `project_id: <Firebase project id>` and `service_account_file: <path to the service-account JSON key>`",
                "1 error(s); the gateway would not start",
            ],
        ),
        (
            "webpush without a key",
            "apps:\n  a:\n    type: webpush\n    vapid_contact_email: a@b\n    allowed_endpoints: [a.example]\n    ttl: 60\n    max_connections: 3\n    colour: red\n",
            1,
            vec![
                "error: apps.a.vapid_private_key: required: the path of a P-256 private key PEM (create one with `pushgate gen-vapid`)",
                "warning: apps.a.colour: unknown key, ignored",
                "1 error(s); the gateway would not start",
            ],
        ),
        (
            "unknown type",
            "apps:\n  a:\n    type: pigeon\n    topic: t\n    ttl: 5\n",
            1,
            vec![
                "error: apps.a.type: unknown type `pigeon`; expected apns, gcm (or fcm), webpush or unifiedpush",
                "1 error(s); the gateway would not start",
            ],
        ),
        (
            "typos",
            "htpp:\n  port: 5000\nlog:\n  levle: debug\napps:\n  a:\n    type: webpush\n    vapid_private_key: {dir}/vapid.pem\n    vapid_contact_email: a@b\n    tll: 60\n",
            0,
            vec![
                "warning: log.levle: unknown key, ignored; did you mean `level`?",
                "warning: apps.a.tll: unknown key, ignored; did you mean `ttl`?",
                "warning: htpp: unknown key, ignored; did you mean `http`?",
            ],
        ),
        (
            "store directory missing",
            "store:\n  sqlite:\n    path: {dir}/missing/pushgate.db\napps:\n  a:\n    type: webpush\n    vapid_private_key: {dir}/vapid.pem\n    vapid_contact_email: a@b\n",
            1,
            vec![
                "error: store.sqlite.path: `{dir}/missing/pushgate.db`: the directory `{dir}/missing` does not exist",
                "1 error(s); the gateway would not start",
            ],
        ),
        (
            "log file directory missing",
            "log:\n  access:\n    file: {dir}/missing/access.log\napps:\n  a:\n    type: webpush\n    vapid_private_key: {dir}/vapid.pem\n    vapid_contact_email: a@b\n",
            1,
            vec![
                "error: log.access.file: `{dir}/missing/access.log`: the directory `{dir}/missing` does not exist",
                "1 error(s); the gateway would not start",
            ],
        ),
    ];
    let mut wrong = Vec::new();
    for (name, yaml, want_code, expected) in &cases {
        let (code, lines) = problems(yaml);
        if code != *want_code || lines != *expected {
            wrong.push(format!(
                "{name}: exit {code}\n  got:      {lines:?}\n  expected: {expected:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
#[test]
fn unifiedpush_keys_are_checked() {
    let (code, lines) = problems(
        "apps:
  a:
    type: unifiedpush
    ttl: soon
    allow_http_endpoints: maybe
    max_connections: 0
    ca_file: {dir}/not-a-key.pem
    default_app: true
    vapid_private_key: {dir}/vapid.pem
  b:
    type: unifiedpush
    default_app: true
",
    );
    assert_eq!(code, 1);
    assert_eq!(
        lines,
        vec![
            "error: apps.a.ttl: expected a whole number from 0 to 2419200, found a string",
            "error: apps.a.max_connections: expected a whole number from 1 to 10000, found 0",
            "error: apps.a.allow_http_endpoints: expected true or false, found a string",
            "error: apps.a.ca_file: `{dir}/not-a-key.pem` holds no PEM certificate",
            "warning: apps.a.vapid_private_key: unknown key, ignored",
            "error: apps: `default_app: true` is set on several apps (a, b); at most one may serve unmatched app ids",
            "5 error(s); the gateway would not start",
        ]
    );
}
