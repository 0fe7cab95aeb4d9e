//! The PostgreSQL backend: for several gateways behind one load balancer.
//!
//! Gateways share the outbox safely: an entry is taken with `FOR UPDATE SKIP
//! LOCKED` and leased by moving its `due_at` forward, so exactly one worker
//! has it, and a crashed worker's entries fall due again when the lease ends.
//! Claims (de-duplication) are single upserts, atomic under concurrency.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::Postgres;

use super::sql_store::SqlStore;
use super::StoreError;

/// Connects to the database at `url`; reads and writes share one pool.
pub async fn open(url: &str, max_connections: u32) -> Result<SqlStore<Postgres>, StoreError> {
    let open_err = |message: String| StoreError::Open {
        what: redact_url(url),
        message,
    };
    let options: PgConnectOptions = url
        .parse()
        .map_err(|e: sqlx::Error| open_err(e.to_string()))?;
    // Server notices such as "relation already exists, skipping" are not the operator's business.
    let options = options.options([("client_min_messages", "warning")]);
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(|e| open_err(e.to_string()))?;
    super::migrations::migrate(&pool).await?;
    Ok(SqlStore::start(pool.clone(), pool))
}

/// The URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "the configured PostgreSQL URL".into(),
    }
}
