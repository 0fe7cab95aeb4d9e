-- A request's notification is stored once for all its queued devices
-- (outbox.body is then only the device); rows of earlier versions keep their
-- whole body and a NULL notification_id. outbox_notifications rows are deleted
-- once no outbox entry refers to them.
CREATE TABLE outbox_notifications (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    body TEXT NOT NULL, created_at BIGINT NOT NULL);
ALTER TABLE outbox ADD COLUMN notification_id BIGINT;
CREATE INDEX outbox_notification ON outbox (notification_id);
