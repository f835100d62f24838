-- imuflow schema, version 10: the SSE event log is pruned.
--
-- The progress service deletes the events of finished files once they are older than
-- IMUFLOW_EVENT_RETENTION, except each file's newest event (the position a new stream's
-- snapshot row carries as its id). `pruned_through` is the highest id ever deleted: a
-- client resuming from an id below it may have missed a deleted state change, so it gets
-- the current state of every file instead of a replay.

CREATE INDEX IF NOT EXISTS file_events_created_idx ON file_events (created_at);

CREATE TABLE IF NOT EXISTS file_events_retention (
    singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    pruned_through  bigint NOT NULL DEFAULT 0,
    pruned_at       timestamptz
);
INSERT INTO file_events_retention DEFAULT VALUES ON CONFLICT DO NOTHING;
