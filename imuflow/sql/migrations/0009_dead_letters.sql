-- imuflow schema, version 9: dead letters, per-row retry backoff, and what the broker holds.
--
-- An outbox row the broker can never take (too large, invalid) used to roll back its relay's
-- whole batch and be retried for ever, in id order, blocking every later row of every user.
-- Now such a row is set aside (`dead_at`, `last_error`) and the relay moves on; a row that
-- fails for a transient reason while others of its batch go through waits `retry_at`
-- instead of being claimed first again. `failed_file` remembers that dead-lettering the row
-- failed its file, so a replay can queue that file again.

ALTER TABLE outbox
    ADD COLUMN failures    integer NOT NULL DEFAULT 0,
    ADD COLUMN retry_at    timestamptz,
    ADD COLUMN last_error  text,
    ADD COLUMN dead_at     timestamptz,
    ADD COLUMN replays     integer NOT NULL DEFAULT 0,
    ADD COLUMN failed_file boolean NOT NULL DEFAULT false,
    -- Where the broker put a file-job event (imuflow/lostevents.py tells lost from kept).
    ADD COLUMN kafka_partition integer,
    ADD COLUMN kafka_offset    bigint;

DROP INDEX outbox_pending_idx;
CREATE INDEX outbox_pending_idx ON outbox (id) WHERE published_at IS NULL AND dead_at IS NULL;
CREATE INDEX outbox_dead_idx ON outbox (id) WHERE dead_at IS NOT NULL;

-- A floor of each file-job partition's end offset: the first offset the broker assigned in
-- the latest relay round, + 1 (not the last: Tansu answers a partition's end offset as its
-- last record batch's base offset + 1). A broker whose end offset is below it has lost messages (Tansu keeps everything
-- in memory; a Kafka topic can be deleted and re-created): the relays then republish the
-- events of the files still `queued` whose event is not among those the broker kept.
CREATE TABLE outbox_marks (
    topic        text NOT NULL,
    partition    integer NOT NULL,
    next_offset  bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);
