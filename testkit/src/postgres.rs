//! A fresh, empty PostgreSQL database per test, on the server named by
//! `PUSHGATE_TEST_POSTGRES` (`scripts/test` starts a throwaway one).
//!
//! Without that variable the PostgreSQL tests skip, unless
//! `PUSHGATE_REQUIRE_POSTGRES` is set (as `scripts/test` and CI do): then a
//! missing server is a failure.

use sqlx::{AssertSqlSafe, Connection};

/// Creates a database with a random name; returns its URL, or `None` to skip.
pub async fn fresh_database() -> Option<String> {
    let Ok(admin) = std::env::var("PUSHGATE_TEST_POSTGRES") else {
        assert!(
            std::env::var_os("PUSHGATE_REQUIRE_POSTGRES").is_none(),
            "PUSHGATE_REQUIRE_POSTGRES is set but PUSHGATE_TEST_POSTGRES names no server"
        );
        eprintln!("PUSHGATE_TEST_POSTGRES not set: PostgreSQL test skipped (run ./scripts/test)");
        return None;
    };
    let name = format!(
        "pushgate_test_{:016x}",
        rand_core::RngCore::next_u64(&mut rand_core::OsRng)
    );
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to PUSHGATE_TEST_POSTGRES: {e}"));
    // The name is ours (hex digits): nothing to inject.
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("CREATE DATABASE");
    let _ = conn.close().await;
    let mut url = url::Url::parse(&admin).expect("PUSHGATE_TEST_POSTGRES is a URL");
    url.set_path(&name);
    Some(url.to_string())
}

/// Drops a database made by [`fresh_database`], closing its connections first
/// (how the tests make the store unreachable under a running gateway).
pub async fn drop_database(url: &str) {
    let admin = std::env::var("PUSHGATE_TEST_POSTGRES").expect("PUSHGATE_TEST_POSTGRES");
    let name = url::Url::parse(url)
        .expect("URL")
        .path()
        .trim_start_matches('/')
        .to_owned();
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to PUSHGATE_TEST_POSTGRES");
    assert!(
        name.starts_with("pushgate_test_")
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    );
    sqlx::query(AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)")))
        .execute(&mut conn)
        .await
        .expect("DROP DATABASE");
    let _ = conn.close().await;
}
