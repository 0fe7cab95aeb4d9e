//! The PostgreSQL backend: for several gateways behind one load balancer.
//!
//! Gateways share the outbox safely: an entry is taken with `FOR UPDATE SKIP
//! LOCKED` and leased by moving its `due_at` forward, so exactly one worker
//! has it, and a crashed worker's entries fall due again when the lease ends.
//! Claims (de-duplication) are single upserts, atomic under concurrency.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Pool, Postgres};

use super::batch::{Reader, Writer};
use super::{
    ClaimKey, ClaimState, DeviceKey, Entry, Expiry, Millis, Rejection, Settlement, Stats,
    StoreError,
};

mod q {
    crate::store::queries::queries!(sqlx::Postgres, " FOR UPDATE SKIP LOCKED");
    crate::store::migrations::migrate_fn!(
        sqlx::Postgres,
        postgres,
        "SELECT pg_advisory_xact_lock(7243001)"
    );
}

pub struct PgStore {
    pool: Pool<Postgres>,
    /// The writer's connection, shared by group commits, outbox takes and expiry.
    held: q::Held,
    writer: Writer,
    reader: Reader,
}

impl PgStore {
    pub async fn open(url: &str, max_connections: u32) -> Result<PgStore, StoreError> {
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
        q::migrate(&pool).await?;
        let (held, writer, reader) = q::start_grouping(pool.clone(), pool.clone());
        Ok(PgStore {
            pool,
            held,
            writer,
            reader,
        })
    }
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

crate::store::queries::impl_store!(PgStore, "postgres", read = pool, write = pool);
