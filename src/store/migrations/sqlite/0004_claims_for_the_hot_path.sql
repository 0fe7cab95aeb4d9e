-- Claims shaped for SQLite's hot path (the gateway's store thread reads a
-- claim before each push and writes it once after):
-- - the primary key starts with the pushkey: SQLite compares an index's first
--   text column directly and falls back to its general record comparison
--   only when it is equal, which the app id, first before, almost always was;
-- - no claims_until index (a b-tree insert per settled push and a page per
--   commit): claims are expired in the order they were written (rowid order,
--   which is the order of their times; the copy below keeps it so).
-- Leases of claims being sent are no longer written (the gateway keeps them);
-- rows are settled claims, and leases an older version wrote.
CREATE TABLE claims_v4 (app_id TEXT NOT NULL, pushkey TEXT NOT NULL, event_id TEXT NOT NULL,
    settled INTEGER NOT NULL, until_ms BIGINT NOT NULL,
    PRIMARY KEY (pushkey, event_id, app_id));
-- In time order (read through claims_until, which goes with the old table).
INSERT INTO claims_v4 (app_id, pushkey, event_id, settled, until_ms)
    SELECT app_id, pushkey, event_id, settled, until_ms FROM claims ORDER BY until_ms;
DROP TABLE claims;
ALTER TABLE claims_v4 RENAME TO claims;
