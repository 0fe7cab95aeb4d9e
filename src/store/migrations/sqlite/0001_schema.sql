-- Tables:
-- - outbox: pushes still to deliver, leased to a worker by moving due_at forward;
-- - rejections: pushkeys a push service declared dead (answered as rejected without asking again);
-- - claims: one row per (device, event) being sent or sent, for de-duplication;
--   settled = 0 means "being sent, lease until until_ms", settled = 1 means "done at until_ms".
CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT,
    app_id TEXT NOT NULL, pushkey TEXT NOT NULL, body TEXT NOT NULL,
    created_at BIGINT NOT NULL, due_at BIGINT NOT NULL, attempts BIGINT NOT NULL,
    last_error TEXT);
CREATE INDEX outbox_due ON outbox (due_at);
CREATE TABLE rejections (app_id TEXT NOT NULL, pushkey TEXT NOT NULL,
    rejected_at BIGINT NOT NULL, reason TEXT NOT NULL, PRIMARY KEY (app_id, pushkey));
CREATE INDEX rejections_rejected_at ON rejections (rejected_at);
CREATE TABLE claims (app_id TEXT NOT NULL, pushkey TEXT NOT NULL, event_id TEXT NOT NULL,
    settled INTEGER NOT NULL, until_ms BIGINT NOT NULL,
    PRIMARY KEY (app_id, pushkey, event_id));
CREATE INDEX claims_until ON claims (until_ms);
