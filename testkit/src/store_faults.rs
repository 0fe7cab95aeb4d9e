//! A store that cannot be written to, as with a full disk: triggers make every
//! write of a de-duplication claim, and the readiness probe's write, fail
//! with the error a full disk gives (SQLite's message, PostgreSQL's `53100`),
//! from a connection of the test's own. Reads still work.

use std::path::Path;

use sqlx::Executor;

/// The database behind a gateway's store.
pub enum Db<'a> {
    Sqlite(&'a Path),
    Postgres(&'a str),
}

/// Makes writes fail (`refuse`), or lifts that.
pub async fn refuse_writes(db: Db<'_>, refuse: bool) {
    match db {
        Db::Sqlite(path) => {
            let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
            let pool = sqlx::SqlitePool::connect_with(options)
                .await
                .expect("connect");
            let sqls: &[&str] = if refuse {
                &[
                    "CREATE TRIGGER refuse_insert BEFORE INSERT ON claims \
                     BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
                    "CREATE TRIGGER refuse_update BEFORE UPDATE ON claims \
                     BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
                    "CREATE TRIGGER refuse_probe BEFORE UPDATE ON _sqlx_migrations \
                     BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
                ]
            } else {
                &[
                    "DROP TRIGGER refuse_insert",
                    "DROP TRIGGER refuse_update",
                    "DROP TRIGGER refuse_probe",
                ]
            };
            for sql in sqls {
                pool.execute(*sql).await.expect("trigger");
            }
            pool.close().await;
        }
        Db::Postgres(url) => {
            let pool = sqlx::PgPool::connect(url).await.expect("connect");
            let sqls: &[&str] = if refuse {
                &[
                    "CREATE OR REPLACE FUNCTION refuse_writes() RETURNS trigger LANGUAGE plpgsql AS \
                     $$ BEGIN RAISE EXCEPTION 'could not extend file' USING ERRCODE = '53100'; END $$",
                    "CREATE TRIGGER refuse_writes BEFORE INSERT OR UPDATE ON claims \
                     FOR EACH ROW EXECUTE FUNCTION refuse_writes()",
                    "CREATE TRIGGER refuse_probe BEFORE UPDATE ON _sqlx_migrations \
                     FOR EACH ROW EXECUTE FUNCTION refuse_writes()",
                ]
            } else {
                &[
                    "DROP TRIGGER refuse_writes ON claims",
                    "DROP TRIGGER refuse_probe ON _sqlx_migrations",
                ]
            };
            for sql in sqls {
                pool.execute(*sql).await.expect("trigger");
            }
            pool.close().await;
        }
    }
}
