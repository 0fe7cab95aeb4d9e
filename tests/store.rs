//! The store's contract, checked against both backends: SQLite (a temporary
//! file) and PostgreSQL (a fresh database on the server `scripts/test` starts).
//! Every check runs twice, once per backend, from the same code (`rstest`
//! values of [`Db`]).

use std::collections::HashSet;
use std::sync::Arc;

use pushgate::config::StoreConfig;
use pushgate::store::{
    self, ClaimKey, ClaimState, DeviceKey, Expiry, NewEntry, Rejection, Settlement, Store,
};
use rstest::rstest;

/// A store on a backend, and what keeps it alive (the SQLite file's directory).
struct Backend {
    store: Arc<dyn Store>,
    config: StoreConfig,
    _dir: Option<tempfile::TempDir>,
}

/// The database a test runs on: every check below takes one as an `rstest`
/// value, so that the same body runs once per backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Db {
    Sqlite,
    Postgres,
}

impl Db {
    /// A fresh, empty database (no store opened on it yet) and what keeps it
    /// alive; `None` when no PostgreSQL server is configured (the test skips).
    async fn fresh(self) -> Option<(StoreConfig, Option<tempfile::TempDir>)> {
        match self {
            Db::Sqlite => {
                let dir = tempfile::tempdir().expect("dir");
                let config = StoreConfig::Sqlite {
                    path: dir.path().join("pushgate.db"),
                };
                Some((config, Some(dir)))
            }
            Db::Postgres => {
                let url = testkit::postgres::fresh_database().await?;
                let config = StoreConfig::Postgres {
                    url: url.into(),
                    max_connections: 10,
                };
                Some((config, None))
            }
        }
    }

    /// The store, opened on a fresh database.
    async fn open(self) -> Option<Backend> {
        let (config, dir) = self.fresh().await?;
        let store = store::open(&config).await.expect("open").expect("a store");
        Some(Backend {
            store,
            config,
            _dir: dir,
        })
    }
}

fn dev(pushkey: &str) -> DeviceKey {
    DeviceKey {
        app_id: "org.example.app".into(),
        pushkey: pushkey.into(),
    }
}

fn claim_key(pushkey: &str, event: &str) -> ClaimKey {
    ClaimKey {
        app_id: "org.example.app".into(),
        pushkey: pushkey.into(),
        event_id: event.into(),
    }
}

fn rejection(pushkey: &str, at: i64, reason: &str) -> Rejection {
    Rejection {
        app_id: "org.example.app".into(),
        pushkey: pushkey.into(),
        rejected_at: at,
        reason: reason.into(),
    }
}

fn new_entry(pushkey: &str, created_at: i64, due_at: i64) -> NewEntry {
    NewEntry {
        app_id: "org.example.app".into(),
        pushkey: pushkey.into(),
        body: format!(r#"{{"notification":{{"devices":[{{"pushkey":"{pushkey}"}}]}}}}"#),
        shared: None,
        created_at,
        due_at,
        attempts: 1,
        last_error: Some("503".into()),
    }
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reopening_keeps_data_and_schema(#[values(Db::Sqlite, Db::Postgres)] db: Db) {
    let Some(b) = db.open().await else { return };
    let s = Settlement {
        now: 1000,
        remember: vec![rejection("dead", 900, "410 Gone")],
        enqueue: vec![new_entry("k", 1000, 1000)],
        ..Settlement::default()
    };
    b.store.settle(s).await.expect("settle");
    // Opening again runs the migrations again: they must be a no-op on an up-to-date schema.
    let again = store::open(&b.config)
        .await
        .expect("reopen")
        .expect("a store");
    assert_eq!(
        again.rejections(&[dev("dead")]).await.expect("read"),
        vec![rejection("dead", 900, "410 Gone")]
    );
    let stats = again.stats().await.expect("stats");
    assert_eq!(
        (stats.outbox, stats.oldest, stats.rejections),
        (1, Some(1000), 1)
    );
    again.ping().await.expect("ping");
    #[cfg(unix)]
    if let StoreConfig::Sqlite { path } = &b.config {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .expect("db file")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "the database names pushkeys: owner only");
    }
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rejections_are_remembered_updated_and_forgotten(
    #[values(Db::Sqlite, Db::Postgres)] db: Db,
) {
    let Some(b) = db.open().await else { return };
    let s = &b.store;
    assert_eq!(s.rejections(&[dev("a")]).await.expect("read"), vec![]);
    let remember = Settlement {
        now: 10,
        // The same key twice in one settlement: the last one wins, no error.
        remember: vec![
            rejection("a", 5, "410"),
            rejection("b", 7, "404"),
            rejection("a", 6, "410 Gone"),
        ],
        ..Settlement::default()
    };
    s.settle(remember).await.expect("settle");
    let mut got = s
        .rejections(&[dev("a"), dev("b"), dev("c")])
        .await
        .expect("read");
    got.sort_by(|x, y| x.pushkey.cmp(&y.pushkey));
    assert_eq!(got.len(), 2);
    assert_eq!(got[1], rejection("b", 7, "404"));
    assert_eq!(got[0].pushkey, "a");

    // A later rejection of the same token replaces the earlier one.
    s.settle(Settlement {
        now: 20,
        remember: vec![rejection("b", 20, "Unregistered")],
        ..Settlement::default()
    })
    .await
    .expect("settle");
    assert_eq!(
        s.rejections(&[dev("b")]).await.expect("read"),
        vec![rejection("b", 20, "Unregistered")]
    );
    // Another app's identical pushkey is a different device.
    let other = DeviceKey {
        app_id: "org.example.other".into(),
        pushkey: "b".into(),
    };
    assert_eq!(s.rejections(&[other]).await.expect("read"), vec![]);

    s.settle(Settlement {
        now: 30,
        forget: vec![dev("a"), dev("b")],
        ..Settlement::default()
    })
    .await
    .expect("settle");
    assert_eq!(
        s.rejections(&[dev("a"), dev("b")]).await.expect("read"),
        vec![]
    );
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_grant_once_take_over_expired_leases_and_reopen_after_the_window(
    #[values(Db::Sqlite, Db::Postgres)] db: Db,
) {
    let Some(b) = db.open().await else { return };
    let s = &b.store;
    let k = claim_key("p", "$e1");
    // First claim: granted, leased until 2000.
    assert_eq!(
        s.claim(std::slice::from_ref(&k), 1000, 2000, 0)
            .await
            .expect("claim"),
        vec![k.clone()]
    );
    assert_eq!(
        s.claim_states(std::slice::from_ref(&k))
            .await
            .expect("states"),
        vec![(k.clone(), ClaimState::Sending { until: 2000 })]
    );
    // A second request while the lease runs: not granted.
    assert_eq!(
        s.claim(std::slice::from_ref(&k), 1500, 2500, 0)
            .await
            .expect("claim"),
        vec![]
    );
    // The lease ran out (its holder died): taken over.
    assert_eq!(
        s.claim(std::slice::from_ref(&k), 2001, 3000, 0)
            .await
            .expect("claim"),
        vec![k.clone()]
    );
    // Settled at 2500: a duplicate inside the window is not granted …
    s.settle(Settlement {
        now: 2500,
        settle_claims: vec![k.clone()],
        ..Settlement::default()
    })
    .await
    .expect("settle");
    assert_eq!(
        s.claim_states(std::slice::from_ref(&k))
            .await
            .expect("states"),
        vec![(k.clone(), ClaimState::Settled { at: 2500 })]
    );
    assert_eq!(
        s.claim(std::slice::from_ref(&k), 9000, 10_000, 2400)
            .await
            .expect("claim"),
        vec![]
    );
    // … one after the window is (settled_before passed the settle time).
    assert_eq!(
        s.claim(std::slice::from_ref(&k), 9000, 10_000, 2501)
            .await
            .expect("claim"),
        vec![k.clone()]
    );
    // Several keys in one query: only the new ones are granted.
    let batch = vec![
        claim_key("p", "$e1"),
        claim_key("p", "$e2"),
        claim_key("q", "$e1"),
    ];
    let mut granted = s.claim(&batch, 9100, 10_000, 0).await.expect("claim");
    granted.sort();
    assert_eq!(granted, vec![claim_key("p", "$e2"), claim_key("q", "$e1")]);
}

/// SQLite's leases are the gateway's own (one gateway per file): a claim being
/// sent writes nothing, only its settlement does; a gateway opened on the file
/// afterwards (the first one died) does not wait for them. The claims of a
/// database of an earlier version are kept by migration 4 (which reshapes
/// the table): a lease an older version wrote is honoured until it ends, a
/// settled claim still answers duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_keeps_leases_in_the_gateway_and_honours_the_claims_of_older_versions() {
    let Some((config, _dir)) = old_database(Db::Sqlite, 3).await else {
        return;
    };
    run_sql(
        &config,
        "INSERT INTO claims (app_id, pushkey, event_id, settled, until_ms) VALUES \
         ('org.example.app', 'old', '$e1', 0, 3000), ('org.example.app', 'done', '$e1', 1, 2500)",
    )
    .await;
    let s = store::open(&config).await.expect("open").expect("store");
    let (old, done) = (claim_key("old", "$e1"), claim_key("done", "$e1"));
    assert_eq!(
        s.claim_states(&[old.clone(), done.clone()])
            .await
            .expect("states"),
        vec![
            (old.clone(), ClaimState::Sending { until: 3000 }),
            (done.clone(), ClaimState::Settled { at: 2500 })
        ]
    );
    let olds = std::slice::from_ref(&old);
    assert_eq!(s.claim(olds, 2000, 4000, 0).await.expect("claim"), vec![]);
    assert_eq!(
        s.claim(std::slice::from_ref(&done), 2600, 4000, 0)
            .await
            .expect("claim"),
        vec![],
        "a duplicate of a push settled before the upgrade"
    );

    let k = claim_key("p", "$e1");
    let keys = std::slice::from_ref(&k);
    assert_eq!(
        s.claim(keys, 1000, 2000, 0).await.expect("claim"),
        vec![k.clone()]
    );
    assert_eq!(
        s.stats().await.expect("stats").claims,
        2,
        "the two rows of before; the lease is not written"
    );
    assert_eq!(s.claim(keys, 1500, 2500, 0).await.expect("claim"), vec![]);

    let again = store::open(&config).await.expect("reopen").expect("store");
    assert_eq!(
        again.claim(keys, 1500, 2500, 0).await.expect("claim"),
        vec![k.clone()],
        "the first gateway's lease is not in the file"
    );
    assert_eq!(
        again.claim(olds, 3001, 4000, 0).await.expect("claim"),
        vec![old.clone()],
        "an older version's lease is taken over when it ended"
    );
    again
        .settle(Settlement {
            now: 3500,
            settle_claims: vec![k.clone(), old.clone()],
            ..Settlement::default()
        })
        .await
        .expect("settle");
    assert_eq!(
        again
            .claim_states(&[k.clone(), old.clone()])
            .await
            .expect("states"),
        vec![
            (k, ClaimState::Settled { at: 3500 }),
            (old, ClaimState::Settled { at: 3500 })
        ]
    );
    assert_eq!(again.stats().await.expect("stats").claims, 3);
}

/// A claim given back (`release_claims`) or settled ends its lease at once.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_settlement_ends_the_leases_it_settles_or_gives_back(
    #[values(Db::Sqlite, Db::Postgres)] db: Db,
) {
    let Some(b) = db.open().await else { return };
    let s = &b.store;
    let (given, kept) = (claim_key("given", "$e"), claim_key("kept", "$e"));
    let both = [given.clone(), kept.clone()];
    assert_eq!(s.claim(&both, 1000, 9000, 0).await.expect("claim").len(), 2);
    s.settle(Settlement {
        now: 1100,
        release_claims: vec![given.clone()],
        settle_claims: vec![kept.clone()],
        ..Settlement::default()
    })
    .await
    .expect("settle");
    assert_eq!(
        s.claim_states(&both).await.expect("states"),
        vec![(kept.clone(), ClaimState::Settled { at: 1100 })]
    );
    assert_eq!(
        s.claim(&both, 1200, 9000, 0).await.expect("claim"),
        vec![given],
        "the given-back claim is free, the settled one a duplicate"
    );
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbox_entries_come_due_are_leased_rescheduled_and_deleted(
    #[values(Db::Sqlite, Db::Postgres)] db: Db,
) {
    let Some(b) = db.open().await else { return };
    let s = &b.store;
    let ids = s
        .settle(Settlement {
            now: 100,
            enqueue: vec![
                new_entry("a", 100, 100),
                new_entry("b", 100, 500),
                new_entry("c", 90, 50),
            ],
            ..Settlement::default()
        })
        .await
        .expect("enqueue");
    assert_eq!(ids.len(), 3);
    assert!(ids[0] < ids[1] && ids[1] < ids[2], "ids in order: {ids:?}");

    // At 200, `c` (due 50) and `a` (due 100) are due, the longest due first.
    let due = s.take_due(200, 10_000, 1).await.expect("take");
    assert_eq!(due.iter().map(|e| e.id).collect::<Vec<_>>(), vec![ids[2]]);
    assert_eq!(due[0].created_at, 90);
    assert_eq!(due[0].attempts, 1);
    assert_eq!(due[0].body, new_entry("c", 0, 0).body);
    let due = s.take_due(200, 10_000, 10).await.expect("take");
    assert_eq!(due.iter().map(|e| e.id).collect::<Vec<_>>(), vec![ids[0]]);
    // Leased until 10 000: not handed out again before that, even once `b` is due.
    let due = s.take_due(600, 10_000, 10).await.expect("take");
    assert_eq!(due.iter().map(|e| e.id).collect::<Vec<_>>(), vec![ids[1]]);
    assert!(s
        .take_due(9_999, 20_000, 10)
        .await
        .expect("take")
        .is_empty());

    // `a` failed again: due at 12 000 with 2 attempts; `c` delivered.
    s.settle(Settlement {
        now: 700,
        reschedule: vec![(ids[0], 12_000, 2, "timeout".into())],
        delete: vec![ids[2]],
        ..Settlement::default()
    })
    .await
    .expect("settle");
    // At 10 001 the lease of `b` has run out (its worker died): due again.
    let due = s.take_due(10_001, 30_000, 10).await.expect("take");
    assert_eq!(due.iter().map(|e| e.id).collect::<Vec<_>>(), vec![ids[1]]);
    let due = s.take_due(12_000, 30_000, 10).await.expect("take");
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].id, due[0].attempts), (ids[0], 2));
    // The limit is honoured.
    s.settle(Settlement {
        now: 0,
        enqueue: (0..5).map(|i| new_entry(&format!("x{i}"), 0, 0)).collect(),
        ..Settlement::default()
    })
    .await
    .expect("enqueue");
    assert_eq!(s.take_due(1, 2, 3).await.expect("take").len(), 3);
    let stats = s.stats().await.expect("stats");
    assert_eq!((stats.outbox, stats.oldest), (7, Some(0)));
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_workers_never_take_the_same_entry(#[values(Db::Sqlite, Db::Postgres)] db: Db) {
    let Some(b) = db.open().await else { return };
    const ENTRIES: usize = 300;
    let s = b.store.clone();
    s.settle(Settlement {
        now: 0,
        enqueue: (0..ENTRIES)
            .map(|i| new_entry(&format!("k{i}"), 0, 0))
            .collect(),
        ..Settlement::default()
    })
    .await
    .expect("enqueue");
    // Eight workers take small batches at once until nothing is due.
    let workers = (0..8).map(|_| {
        let s = s.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..1000 {
                let got = s.take_due(10, 1_000_000, 7).await.expect("take");
                if got.is_empty() {
                    break;
                }
                mine.extend(got.into_iter().map(|e| e.id));
            }
            mine
        })
    });
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    let distinct: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(distinct.len(), ENTRIES, "every entry taken");
    assert_eq!(all.len(), ENTRIES, "no entry taken twice");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiry_deletes_old_rows_in_bounded_batches(#[values(Db::Sqlite, Db::Postgres)] db: Db) {
    let Some(b) = db.open().await else { return };
    let s = &b.store;
    let old: Vec<ClaimKey> = (0..25)
        .map(|i| claim_key("p", &format!("$old{i}")))
        .collect();
    s.claim(&old, 0, 100, 0).await.expect("claim");
    let new = vec![claim_key("p", "$new")];
    s.claim(&new, 0, 5000, 0).await.expect("claim");
    // Settled at 0 (expired at 1000) and at 5000 (not expired), in that order.
    for (keys, at) in [(old, 0), (new, 5000)] {
        s.settle(Settlement {
            now: at,
            settle_claims: keys,
            ..Settlement::default()
        })
        .await
        .expect("settle");
    }
    s.settle(Settlement {
        now: 0,
        remember: (0..15)
            .map(|i| rejection(&format!("dead{i}"), 10, "410"))
            .chain([rejection("fresh", 4000, "410")])
            .collect(),
        ..Settlement::default()
    })
    .await
    .expect("settle");
    let e = Expiry {
        claims_before: 1000,
        rejections_before: 1000,
        batch: 10,
    };
    // At most 10 claims and 10 rejections per call.
    assert_eq!(s.expire(e).await.expect("expire"), 20);
    assert_eq!(s.expire(e).await.expect("expire"), 15);
    assert_eq!(s.expire(e).await.expect("expire"), 5);
    assert_eq!(s.expire(e).await.expect("expire"), 0);
    let stats = s.stats().await.expect("stats");
    assert_eq!((stats.claims, stats.rejections), (1, 1));
    assert_eq!(s.rejections(&[dev("fresh")]).await.expect("read").len(), 1);
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lists_longer_than_one_statement_chunk(#[values(Db::Sqlite, Db::Postgres)] db: Db) {
    let Some(b) = db.open().await else { return };
    let s = &b.store;
    // More keys than one statement takes (500), so the chunking is exercised.
    let keys: Vec<ClaimKey> = (0..1203)
        .map(|i| claim_key(&format!("p{i}"), "$e"))
        .collect();
    assert_eq!(s.claim(&keys, 0, 100, 0).await.expect("claim").len(), 1203);
    assert_eq!(s.claim_states(&keys).await.expect("states").len(), 1203);
    let devices: Vec<DeviceKey> = (0..1203).map(|i| dev(&format!("p{i}"))).collect();
    s.settle(Settlement {
        now: 1,
        settle_claims: keys.clone(),
        remember: (0..1203)
            .map(|i| rejection(&format!("p{i}"), 1, "410"))
            .collect(),
        ..Settlement::default()
    })
    .await
    .expect("settle");
    assert_eq!(s.rejections(&devices).await.expect("read").len(), 1203);
    let settled = s.claim_states(&keys).await.expect("states");
    assert!(settled
        .iter()
        .all(|(_, st)| *st == ClaimState::Settled { at: 1 }));
}

/// Claims and settlements of many concurrent callers, which the store may write
/// together (group commit; the merge itself is unit-tested in `store::batch`):
/// each caller must get exactly its own answer, a key raced for by several
/// claims goes to one of them, and a bad write among good ones fails only its
/// own caller.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_and_settlements_each_get_their_own_answer(
    #[values(Db::Sqlite, Db::Postgres)] db: Db,
) {
    let Some(b) = db.open().await else { return };
    const CALLERS: usize = 40;
    let s = b.store.clone();
    let tasks: Vec<_> = (0..CALLERS)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                if i % 2 == 0 {
                    // Its own key, and one key every claimer races for.
                    let keys = [
                        claim_key(&format!("own{i}"), "$g"),
                        claim_key("shared", "$g"),
                    ];
                    let got = s.claim(&keys, 1000, 5000, 0).await.expect("claim");
                    (
                        i,
                        got.iter().map(|k| k.pushkey.clone()).collect::<Vec<_>>(),
                        Vec::new(),
                    )
                } else {
                    // i % 4 entries (0 to 3), each named after its caller.
                    let enqueue = (0..i % 4)
                        .map(|j| new_entry(&format!("c{i}e{j}"), 0, 0))
                        .collect();
                    let ids = s
                        .settle(Settlement {
                            now: 1000,
                            enqueue,
                            ..Settlement::default()
                        })
                        .await
                        .expect("settle");
                    (i, Vec::new(), ids)
                }
            })
        })
        .collect();
    let mut shared_winners = 0;
    let mut ids_of = std::collections::HashMap::new();
    for t in tasks {
        let (i, claimed, ids) = t.await.expect("caller");
        if i % 2 == 0 {
            assert!(
                claimed.contains(&format!("own{i}")),
                "caller {i} got its own key: {claimed:?}"
            );
            shared_winners += claimed.iter().filter(|k| *k == "shared").count();
            assert!(claimed.len() <= 2, "caller {i}: {claimed:?}");
        } else {
            assert_eq!(
                ids.len(),
                i % 4,
                "caller {i} gets one id per entry it enqueued"
            );
            for (j, id) in ids.into_iter().enumerate() {
                ids_of.insert(id, format!("c{i}e{j}"));
            }
        }
    }
    assert_eq!(shared_winners, 1, "a raced-for key is granted once");
    // Every id names the entry its caller enqueued.
    let due = s.take_due(10, 1_000_000, 1000).await.expect("take");
    assert_eq!(due.len(), ids_of.len());
    for e in due {
        let name = ids_of.get(&e.id).expect("an id that was handed out");
        assert!(
            e.body.contains(name.as_str()),
            "entry {} is {name}: {}",
            e.id,
            e.body
        );
    }

    // A write the backend refuses (PostgreSQL takes no NUL in text; SQLite
    // does, so there a trigger refuses it), sent among good ones: the good
    // ones succeed, the bad one fails, whichever group it lands in.
    if b.store.backend() == "sqlite" {
        run_sql(
            &b.config,
            "CREATE TRIGGER refuse_bad BEFORE INSERT ON outbox WHEN NEW.pushkey = 'bad' \
             BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        .await;
    }
    let mut bad = new_entry("bad", 0, 0);
    bad.body = "nul \0 byte".into();
    let writes: Vec<_> = (0..10)
        .map(|i| {
            let s = s.clone();
            let entry = if i == 5 {
                bad.clone()
            } else {
                new_entry(&format!("ok{i}"), 0, 0)
            };
            tokio::spawn(async move {
                let r = s
                    .settle(Settlement {
                        now: 1000,
                        enqueue: vec![entry],
                        ..Settlement::default()
                    })
                    .await;
                (i, r)
            })
        })
        .collect();
    for w in writes {
        let (i, r) = w.await.expect("writer");
        match i {
            5 => assert!(r.is_err(), "the bad write fails"),
            _ => assert_eq!(r.expect("a good write succeeds").len(), 1),
        }
    }
}

/// The schema as pushgate's own migrator wrote it before it used sqlx's
/// (`{id}` is each backend's auto-incrementing id): versions 1 to 3, each
/// followed by its row in `pushgate_schema`. Kept here verbatim, as released.
const OLD_MIGRATIONS: [&str; 3] = [
    "CREATE TABLE outbox (id {id}, \
     app_id TEXT NOT NULL, pushkey TEXT NOT NULL, body TEXT NOT NULL, \
     created_at BIGINT NOT NULL, due_at BIGINT NOT NULL, attempts BIGINT NOT NULL, \
     last_error TEXT);\
     CREATE INDEX outbox_due ON outbox (due_at);
     CREATE TABLE rejections (app_id TEXT NOT NULL, pushkey TEXT NOT NULL,
         rejected_at BIGINT NOT NULL, reason TEXT NOT NULL, PRIMARY KEY (app_id, pushkey));
     CREATE INDEX rejections_rejected_at ON rejections (rejected_at);
     CREATE TABLE claims (app_id TEXT NOT NULL, pushkey TEXT NOT NULL, event_id TEXT NOT NULL,
         settled INTEGER NOT NULL, until_ms BIGINT NOT NULL,
         PRIMARY KEY (app_id, pushkey, event_id));
     CREATE INDEX claims_until ON claims (until_ms);",
    "DELETE FROM rejections WHERE NOT (\
     reason LIKE 'APNs answered 410%' \
     OR reason LIKE 'APNs answered 400 BadDeviceToken%' \
     OR reason LIKE 'APNs answered 400 DeviceTokenNotForTopic%' \
     OR reason LIKE 'FCM answered 404%' \
     OR reason LIKE 'FCM answered 400%' \
     OR (reason LIKE 'FCM answered %' AND reason LIKE '%UNREGISTERED%'))",
    "CREATE TABLE outbox_notifications (id {id}, \
     body TEXT NOT NULL, created_at BIGINT NOT NULL); \
     ALTER TABLE outbox ADD COLUMN notification_id BIGINT; \
     CREATE INDEX outbox_notification ON outbox (notification_id);",
];

/// Runs `sql` (several statements allowed) on the test's database, from a
/// connection of its own, creating an SQLite file if there is none.
async fn run_sql(config: &StoreConfig, sql: &str) {
    match config {
        StoreConfig::Sqlite { path } => {
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true);
            let pool = sqlx::SqlitePool::connect_with(options)
                .await
                .expect("sqlite");
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&pool)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            pool.close().await;
        }
        StoreConfig::Postgres { url, .. } => {
            let pool = sqlx::PgPool::connect(url.expose()).await.expect("postgres");
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&pool)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            pool.close().await;
        }
        StoreConfig::None => unreachable!("a store"),
    }
}

/// A fresh database as a gateway of an earlier release (its own migrator)
/// left it at schema `version`.
async fn old_database(db: Db, version: usize) -> Option<(StoreConfig, Option<tempfile::TempDir>)> {
    let (config, dir) = db.fresh().await?;
    let id = match db {
        Db::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
        Db::Postgres => "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    };
    run_sql(
        &config,
        "CREATE TABLE IF NOT EXISTS pushgate_schema (version BIGINT NOT NULL)",
    )
    .await;
    for (i, m) in OLD_MIGRATIONS.iter().take(version).enumerate() {
        let sql = format!(
            "{}; INSERT INTO pushgate_schema (version) VALUES ({})",
            m.replace("{id}", id).trim_end().trim_end_matches(';'),
            i + 1
        );
        run_sql(&config, &sql).await;
    }
    Some((config, dir))
}

/// `INSERT INTO rejections` of these (pushkey, reason) pairs, as SQL text.
fn insert_rejections(rows: &[(&str, &str)]) -> String {
    rows.iter()
        .map(|(k, r)| {
            format!(
                "INSERT INTO rejections (app_id, pushkey, rejected_at, reason) \
                 VALUES ('org.example.app', '{k}', 900, '{}');",
                r.replace('\'', "''")
            )
        })
        .collect()
}

/// The pushkeys among `devices` that have a remembered rejection, sorted.
async fn rejected(store: &dyn Store, pushkeys: &[&str]) -> Vec<String> {
    let all: Vec<DeviceKey> = pushkeys.iter().map(|k| dev(k)).collect();
    let mut left: Vec<String> = store
        .rejections(&all)
        .await
        .expect("read")
        .into_iter()
        .map(|r| r.pushkey)
        .collect();
    left.sort();
    left
}

/// Remembered rejections a push service gave as the token's death, and
/// rejections an earlier version wrote for the request's own data or a
/// configuration matter.
const KEPT: [(&str, &str); 5] = [
    ("apns-gone", "APNs answered 410 Unregistered"),
    ("apns-bad", "APNs answered 400 BadDeviceToken"),
    ("apns-topic", "APNs answered 400 DeviceTokenNotForTopic"),
    ("fcm-gone", "FCM answered 404 NOT_FOUND UNREGISTERED: gone"),
    (
        "fcm-token",
        "FCM answered 400 INVALID_ARGUMENT : The registration token is not valid",
    ),
];
const DROPPED: [(&str, &str); 7] = [
    ("bad-default", "data.default_payload must be an object"),
    (
        "sender",
        "FCM answered 403 PERMISSION_DENIED SENDER_ID_MISMATCH: SenderId mismatch",
    ),
    ("topic", "APNs answered 400 TopicDisallowed"),
    ("too-big", "the payload is 5000 bytes even without content"),
    ("p256dh", "push service answered 410: subscription expired"),
    (
        "incomplete",
        "incomplete Web Push subscription: needs a P-256 pushkey",
    ),
    (
        "guard",
        "localhost resolves to 127.0.0.1, a loopback address",
    ),
];

/// A database of the old migrator at schema version 1 is adopted and
/// upgraded: version 2 drops the remembered rejections that were not the push
/// services' word (the token-dead answers stay), version 3 lets a request's
/// notification be stored once, and the entries queued before keep their body.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_version_1_database_of_the_old_migrator_is_upgraded(
    #[values(Db::Sqlite, Db::Postgres)] db: Db,
) {
    let Some((config, _dir)) = old_database(db, 1).await else {
        return;
    };
    let old_body = r#"{"notification":{"devices":[{"pushkey":"old"}]}}"#;
    let sql = format!(
        "{} INSERT INTO outbox (app_id, pushkey, body, created_at, due_at, attempts, last_error) \
         VALUES ('org.example.app', 'old', '{old_body}', 100, 100, 1, '503');",
        insert_rejections(&[KEPT.as_slice(), DROPPED.as_slice()].concat())
    );
    run_sql(&config, &sql).await;

    let upgraded = store::open(&config)
        .await
        .expect("upgrade")
        .expect("a store");
    let all: Vec<&str> = KEPT.iter().chain(&DROPPED).map(|(k, _)| *k).collect();
    let mut expected: Vec<String> = KEPT.iter().map(|(k, _)| k.to_string()).collect();
    expected.sort();
    assert_eq!(rejected(&*upgraded, &all).await, expected);
    // Version 3's shared notification is there and works beside the old entry.
    let shared: Arc<str> = Arc::from(r#"{"event_id":"$e"}"#);
    let ids = upgraded
        .settle(Settlement {
            now: 200,
            enqueue: vec![NewEntry {
                body: r#"{"app_id":"org.example.app","pushkey":"new"}"#.into(),
                shared: Some(shared),
                ..new_entry("new", 200, 200)
            }],
            ..Settlement::default()
        })
        .await
        .expect("settle");
    assert_eq!(ids.len(), 1);
    let mut taken = upgraded.take_due(300, 400, 10).await.expect("take");
    taken.sort_by_key(|e| e.created_at);
    let bodies: Vec<&str> = taken.iter().map(|e| e.body.as_str()).collect();
    assert_eq!(
        bodies,
        [
            old_body,
            r#"{"notification":{"event_id":"$e","devices":[{"app_id":"org.example.app","pushkey":"new"}]}}"#
        ]
    );
    upgraded.ping().await.expect("ping");
    drop(upgraded);

    // Opened again: nothing left to adopt or to apply, and the data stays.
    let again = store::open(&config)
        .await
        .expect("reopen")
        .expect("a store");
    assert_eq!(rejected(&*again, &all).await, expected);
    assert_eq!(again.stats().await.expect("stats").outbox, 2);
}

/// A database of the old migrator at its last version (3) starts with its data
/// unchanged: no migration runs again (version 2 would drop this rejection
/// that a gateway of that version could no longer have written), and an entry
/// that shares its notification is taken whole.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_version_3_database_of_the_old_migrator_starts_unchanged(
    #[values(Db::Sqlite, Db::Postgres)] db: Db,
) {
    let Some((config, _dir)) = old_database(db, 3).await else {
        return;
    };
    let sql = format!(
        "{} INSERT INTO outbox_notifications (body, created_at) VALUES ('{{\"event_id\":\"$e\"}}', 100); \
         INSERT INTO outbox (app_id, pushkey, body, created_at, due_at, attempts, last_error, notification_id) \
         VALUES ('org.example.app', 'k', '{{\"pushkey\":\"k\"}}', 100, 100, 1, NULL, \
         (SELECT MAX(id) FROM outbox_notifications));",
        insert_rejections(&DROPPED[..1])
    );
    run_sql(&config, &sql).await;

    let store = store::open(&config).await.expect("open").expect("a store");
    assert_eq!(rejected(&*store, &[DROPPED[0].0]).await, [DROPPED[0].0]);
    let taken = store.take_due(200, 300, 10).await.expect("take");
    let bodies: Vec<&str> = taken.iter().map(|e| e.body.as_str()).collect();
    assert_eq!(
        bodies,
        [r#"{"notification":{"event_id":"$e","devices":[{"pushkey":"k"}]}}"#]
    );
    // The readiness probe writes to sqlx's version table: it must be there.
    store.ping().await.expect("ping");
    drop(store);
    let again = store::open(&config)
        .await
        .expect("reopen")
        .expect("a store");
    assert_eq!(again.stats().await.expect("stats").rejections, 1);
}

/// The longest values `/notify` accepts (a 64-character app id of two-byte
/// characters, a 512-byte pushkey, a 255-byte event id) fit the schema and its
/// indexes on both backends.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fields_of_the_maximum_accepted_length_are_stored_and_found_again(
    #[values(Db::Sqlite, Db::Postgres)] db: Db,
) {
    let Some(b) = db.open().await else { return };
    let s = &b.store;
    let app_id = "é".repeat(64);
    let pushkey = "k".repeat(512);
    let event_id = format!("${}", "e".repeat(254));
    let dead = Rejection {
        app_id: app_id.clone(),
        pushkey: pushkey.clone(),
        rejected_at: 5,
        reason: "410 Gone".into(),
    };
    s.settle(Settlement {
        now: 10,
        remember: vec![dead.clone()],
        ..Settlement::default()
    })
    .await
    .expect("settle");
    let device = DeviceKey {
        app_id: app_id.clone(),
        pushkey: pushkey.clone(),
    };
    assert_eq!(s.rejections(&[device]).await.expect("read"), vec![dead]);
    let k = ClaimKey {
        app_id,
        pushkey,
        event_id,
    };
    let claim = std::slice::from_ref(&k);
    assert_eq!(
        s.claim(claim, 1000, 2000, 0).await.expect("claim"),
        vec![k.clone()]
    );
    // Found again: a second claim while the lease runs is not granted.
    assert_eq!(s.claim(claim, 1500, 2500, 0).await.expect("claim"), vec![]);
}

/// Makes writes of the gateway's store fail (as a full disk would), or lifts that.
async fn refuse_claim_writes(config: &StoreConfig, refuse: bool) {
    use testkit::store_faults::{refuse_writes, Db};
    match config {
        StoreConfig::Sqlite { path } => refuse_writes(Db::Sqlite(path), refuse).await,
        StoreConfig::Postgres { url, .. } => {
            refuse_writes(Db::Postgres(url.expose()), refuse).await
        }
        StoreConfig::None => {}
    }
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ping_fails_from_a_failed_write_until_a_write_succeeds(
    #[values(Db::Sqlite, Db::Postgres)] db: Db,
) {
    let Some(b) = db.open().await else { return };
    let s = &b.store;
    s.ping().await.expect("ping");
    refuse_claim_writes(&b.config, true).await;
    // A claim and its settlement: SQLite writes only the settlement (the
    // gateway keeps the leases), PostgreSQL both.
    let write = |event: &'static str| async move {
        let k = claim_key("p", event);
        s.claim(std::slice::from_ref(&k), 1000, 2000, 0).await?;
        s.settle(Settlement {
            now: 1500,
            settle_claims: vec![k],
            ..Settlement::default()
        })
        .await
    };
    write("$1").await.expect_err("the write fails");
    let e = s.ping().await.expect_err("not ready after a failed write");
    assert!(matches!(e, store::StoreError::WriteFailing(_)), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("the last write to the store failed"),
        "{e}"
    );
    // Reads still work; the store is not ready until a write succeeds.
    assert!(s.stats().await.is_ok());
    s.ping()
        .await
        .expect_err("still not ready: the ping's own probe write fails too");
    refuse_claim_writes(&b.config, false).await;
    // Writes work again: the ping's probe write finds it out, with no traffic needed.
    s.ping().await.expect("ready again");
    write("$2").await.expect("the write succeeds");
}

#[cfg(unix)]
#[tokio::test]
async fn sqlite_files_readable_by_others_are_made_private_at_open() {
    use std::os::unix::fs::PermissionsExt;
    let b = Db::Sqlite.open().await.expect("sqlite");
    let StoreConfig::Sqlite { path } = &b.config else {
        unreachable!()
    };
    // A write, so that the WAL and its index exist beside the database.
    b.store
        .settle(Settlement {
            now: 1,
            remember: vec![rejection("p", 1, "gone")],
            ..Settlement::default()
        })
        .await
        .expect("settle");
    let files: Vec<std::path::PathBuf> = ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            p.into()
        })
        .collect();
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o7777;
    for f in &files {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let again = store::open(&b.config)
        .await
        .expect("open")
        .expect("a store");
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    assert_eq!(again.stats().await.expect("stats").rejections, 1);
}

/// The entries of one request share its notification: written once, joined
/// with each device when taken, deleted by housekeeping once no entry needs it.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_requests_notification_is_stored_once_and_joined_again_at_take(
    #[values(Db::Sqlite, Db::Postgres)] db: Db,
) {
    let Some(b) = db.open().await else { return };
    let s = &b.store;
    let shared: Arc<str> = Arc::from(format!(
        r#"{{"event_id":"$e","content":{{"body":"{}"}},"counts":{{}}}}"#,
        "x".repeat(10_000)
    ));
    let devices: Vec<String> = (0..3)
        .map(|i| format!(r#"{{"app_id":"org.example.app","pushkey":"k{i}"}}"#))
        .collect();
    let enqueue = devices
        .iter()
        .enumerate()
        .map(|(i, d)| NewEntry {
            body: d.clone(),
            shared: Some(shared.clone()),
            ..new_entry(&format!("k{i}"), 1000, 1000)
        })
        .collect();
    let ids = s
        .settle(Settlement {
            now: 1000,
            enqueue,
            ..Settlement::default()
        })
        .await
        .expect("settle");
    assert_eq!(ids.len(), 3);
    let usage = s.usage().await.expect("usage");
    assert_eq!(usage.shared_bytes, shared.len() as i64, "stored once");
    assert_eq!(
        usage.apps,
        vec![store::AppUsage {
            app_id: "org.example.app".into(),
            entries: 3,
            bytes: devices.iter().map(|d| d.len() as i64).sum(),
        }]
    );
    let stats = s.stats().await.expect("stats");
    assert_eq!(
        stats.outbox_bytes,
        shared.len() as i64 + devices.iter().map(|d| d.len() as i64).sum::<i64>()
    );
    let mut taken = s.take_due(2000, 9000, 10).await.expect("take");
    taken.sort_by_key(|e| e.id);
    let bodies: Vec<String> = taken.into_iter().map(|e| e.body).collect();
    let expected: Vec<String> = devices
        .iter()
        .map(|d| store::join_wire(&shared, d))
        .collect();
    assert_eq!(bodies, expected);
    // Housekeeping keeps it while an entry needs it, and deletes it after.
    s.expire(Expiry {
        claims_before: 0,
        rejections_before: 0,
        batch: 100,
    })
    .await
    .expect("expire");
    assert_eq!(
        s.usage().await.expect("usage").shared_bytes,
        shared.len() as i64
    );
    s.settle(Settlement {
        now: 3000,
        delete: ids,
        ..Settlement::default()
    })
    .await
    .expect("delete");
    s.expire(Expiry {
        claims_before: 0,
        rejections_before: 0,
        batch: 100,
    })
    .await
    .expect("expire");
    assert_eq!(s.usage().await.expect("usage"), store::Usage::default());
}

/// A claim given up (its push neither sent nor queued) is granted again at once.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn released_claims_can_be_claimed_again(#[values(Db::Sqlite, Db::Postgres)] db: Db) {
    let Some(b) = db.open().await else { return };
    let s = &b.store;
    let k = claim_key("k", "$e");
    let keys = std::slice::from_ref(&k);
    assert_eq!(
        s.claim(keys, 1000, 9000, 0).await.expect("claim"),
        vec![k.clone()]
    );
    assert_eq!(s.claim(keys, 1001, 9000, 0).await.expect("claim"), vec![]);
    s.settle(Settlement {
        now: 1002,
        release_claims: vec![k.clone()],
        ..Settlement::default()
    })
    .await
    .expect("release");
    assert_eq!(s.claim(keys, 1003, 9000, 0).await.expect("claim"), vec![k]);
}
