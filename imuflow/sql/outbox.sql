-- Queries of the transactional outbox relay (imuflow/outbox.py), its dead letters
-- (imuflow/deadletters.py) and its lost-event check (imuflow/lostevents.py).

-- name: enqueue
-- $1 topic base name, $2 key, $3 payload (jsonb)
INSERT INTO outbox (topic, key, payload) VALUES ($1, $2, $3);

-- name: claim_pending
-- $1 limit. Rows stay locked until the relay's transaction ends; other relays skip them.
-- A payload with `build` is a stub the relay turns into its event first (created_at is then
-- the event's queued_at).
-- Dead letters are set aside; a row that failed transiently waits for its retry_at, so it
-- is not claimed first again and again ahead of every later row.
SELECT id, topic, key, payload, created_at
FROM outbox
WHERE published_at IS NULL AND dead_at IS NULL AND (retry_at IS NULL OR retry_at <= now())
ORDER BY id
LIMIT $1
FOR UPDATE SKIP LOCKED;

-- name: files_to_build
-- $1 file ids (uuid[]). The rows FileQueued.of_file needs for the stubs of a batch.
SELECT id, user_id, run, storage_uri, filename, size_bytes, format, sensor, timezone
FROM imu_data_files WHERE id = ANY($1::uuid[]);

-- name: store_built
-- $1 ids (bigint[]), $2 payloads (jsonb[], same order): what the relay built and sends.
UPDATE outbox o SET payload = b.payload
FROM unnest($1::bigint[], $2::jsonb[]) AS b(id, payload)
WHERE o.id = b.id;

-- name: mark_published
-- $1 ids. The clock after the sends (not the transaction's start): the lost-event check
-- orders a partition's events by it.
UPDATE outbox SET published_at = clock_timestamp(), retry_at = NULL WHERE id = ANY($1::bigint[]);

-- name: mark_placed
-- $1 ids, $2 partitions (int[]), $3 offsets (bigint[]): where the broker put file-job events.
UPDATE outbox o SET kafka_partition = x.p, kafka_offset = x.o
FROM unnest($1::bigint[], $2::int[], $3::bigint[]) AS x(id, p, o)
WHERE o.id = x.id;

-- name: defer
-- $1 ids, $2 errors (text[], same order). A transient failure of some rows of a batch
-- (others went through): back off per row, 0.5 s doubling to 30 s; never dead-lettered.
UPDATE outbox o
SET failures = o.failures + 1,
    last_error = e.error,
    retry_at = now() + make_interval(secs => LEAST(30.0, 0.5 * power(2, LEAST(o.failures, 10))))
FROM unnest($1::bigint[], $2::text[]) AS e(id, error)
WHERE o.id = e.id;

-- name: dead_letter
-- $1 ids, $2 errors (text[], same order). Rows the broker can never take.
UPDATE outbox o
SET dead_at = now(), last_error = e.error, failures = o.failures + 1, retry_at = NULL
FROM unnest($1::bigint[], $2::text[]) AS e(id, error)
WHERE o.id = e.id
RETURNING o.id, o.topic, o.key;

-- name: fail_dead_files
-- $1 outbox ids just dead-lettered, $2 the file-job topic base name. A file whose own job
-- event cannot be published would wait for ever: it ends failed with the reason, and the
-- row remembers it (a replay queues the file again).
WITH dead AS (
    SELECT o.id, o.key, o.last_error
    FROM outbox o
    WHERE o.id = ANY($1::bigint[]) AND o.topic = $2
      AND o.key ~ '^[0-9a-fA-F-]{36}$'
),
failed AS (
    UPDATE imu_data_files f
    SET status = 'failed',
        error_message = 'its job event could not be published: ' || dead.last_error,
        last_error = dead.last_error,
        completed_at = now(), updated_at = now(),
        eta_seconds = NULL, eta_low_seconds = NULL, eta_high_seconds = NULL
    FROM dead
    WHERE f.id = dead.key::uuid AND f.status IN ('uploaded', 'queued')
    RETURNING f.id, dead.id AS outbox_id
),
marked AS (
    UPDATE outbox o SET failed_file = true FROM failed WHERE o.id = failed.outbox_id
)
SELECT id AS file_id, record_file_event(id) FROM failed;

-- name: mark_files_queued
-- $1 file ids. An upload becomes `queued` once its event is on Kafka.
WITH queued AS (
    UPDATE imu_data_files SET status = 'queued', queued_at = now(), updated_at = now()
    WHERE id = ANY($1::uuid[]) AND status = 'uploaded'
    RETURNING id
)
SELECT record_file_event(id) FROM queued;

-- name: prune_published
-- $1 keep interval. Published rows are only history; keep a day of them for debugging.
-- Dead letters stay until replayed (or their file is deleted).
DELETE FROM outbox WHERE published_at < now() - $1::interval;

-- name: list_dead
-- $1 limit, $2 before id (NULL: from the newest)
SELECT o.id, o.topic, o.key, o.payload->>'type' AS type,
       octet_length(o.payload::text) AS payload_bytes, o.last_error AS error, o.failures,
       o.replays, o.failed_file, o.created_at, o.dead_at, f.id AS file_id, f.user_id,
       f.status AS file_status
FROM outbox o
LEFT JOIN imu_data_files f
       ON o.key ~ '^[0-9a-fA-F-]{36}$' AND f.id = o.key::uuid
WHERE o.dead_at IS NOT NULL AND ($2::bigint IS NULL OR o.id < $2)
ORDER BY o.id DESC
LIMIT $1;

-- name: count_dead
SELECT count(*) FROM outbox WHERE dead_at IS NOT NULL;

-- name: lock_dead
-- $1 id
SELECT id, topic, key, failed_file FROM outbox WHERE id = $1 AND dead_at IS NOT NULL FOR UPDATE;

-- name: replay_dead
-- $1 id. Back to pending with a fresh backoff; the relays are woken.
UPDATE outbox
SET dead_at = NULL, retry_at = NULL, failures = 0, replays = replays + 1, failed_file = false
WHERE id = $1;

-- name: requeue_dead_file
-- $1 file id. A file failed because its job event was dead-lettered goes back to
-- `uploaded` (the relay makes it `queued` once the replayed event is on Kafka).
WITH back AS (
    UPDATE imu_data_files
    SET status = 'uploaded', error_message = NULL, completed_at = NULL, updated_at = now()
    WHERE id = $1 AND status = 'failed'
    RETURNING id
)
SELECT id AS file_id, record_file_event(id) FROM back;

-- name: wake_relays
SELECT pg_notify('imuflow_outbox', '');

-- name: upsert_marks
-- $1 topics (text[]), $2 partitions (int[]), $3 end-offset floors (bigint[]); one row per
-- partition (the caller folds a batch). Marks only grow while nothing is lost.
INSERT INTO outbox_marks (topic, partition, next_offset)
SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[])
ON CONFLICT (topic, partition) DO UPDATE
SET next_offset = GREATEST(outbox_marks.next_offset, EXCLUDED.next_offset), updated_at = now();

-- name: marks
-- $1 topic (full name)
SELECT partition, next_offset FROM outbox_marks WHERE topic = $1;

-- name: lock_marks
-- One checker at a time decides that the broker lost events (an arbitrary constant).
SELECT pg_advisory_xact_lock(7202613);

-- name: clear_marks
-- $1 topic (full name). Before `reset_marks` (a CTE's delete would not be seen by its insert).
DELETE FROM outbox_marks WHERE topic = $1;

-- name: reset_marks
-- $1 topic (full name), $2 partitions (int[]), $3 end offsets (bigint[]): what the broker
-- holds now becomes the new baseline.
INSERT INTO outbox_marks (topic, partition, next_offset)
SELECT $1, p, o FROM unnest($2::int[], $3::bigint[]) AS x(p, o);

-- name: requeue_queued
-- $1 file-job topic base name, $2 why (kept in last_error), $3 partitions (int[]) and $4 their
-- end offsets now (bigint[]). After the broker lost events: a FileQueued event again for every
-- `queued` file whose event is neither still waiting in the outbox nor kept by the broker.
-- Since the loss the broker holds the last `end offset` events published to a partition
-- (Tansu, whose end offset counts record batches, may hold more: such an event is sent
-- twice, never lost), so an event is kept when fewer than that were published there after
-- it (an event without a recorded place counts as lost). `parsing` jobs are left alone: their
-- parsers keep working without the message, and a duplicate delivery would cost an attempt.
WITH ends AS (
    SELECT * FROM unnest($3::int[], $4::bigint[]) AS e(p, n)
),
pending AS (
    SELECT key FROM outbox WHERE published_at IS NULL AND dead_at IS NULL AND topic = $1
),
latest AS (
    SELECT DISTINCT ON (o.key) o.key, o.id, o.kafka_partition, o.published_at
    FROM outbox o
    JOIN imu_data_files f ON f.status = 'queued' AND f.id::text = o.key
    WHERE o.topic = $1 AND o.published_at IS NOT NULL
    ORDER BY o.key, o.published_at DESC, o.id DESC
),
kept AS (
    SELECT l.key
    FROM latest l
    JOIN ends e ON e.p = l.kafka_partition
    WHERE (SELECT count(*) FROM outbox a
           WHERE a.topic = $1 AND a.kafka_partition = l.kafka_partition
             AND (a.published_at, a.id) > (l.published_at, l.id)) < e.n
),
lost AS (
    SELECT f.id FROM imu_data_files f
    WHERE f.status = 'queued'
      AND f.id::text NOT IN (SELECT key FROM pending)
      AND f.id::text NOT IN (SELECT key FROM kept)
    FOR UPDATE OF f SKIP LOCKED
),
queued AS (
    UPDATE imu_data_files f
    SET queued_at = now(), updated_at = now(), last_error = $2
    FROM lost WHERE f.id = lost.id
    RETURNING f.*
)
INSERT INTO outbox (topic, key, payload)
SELECT $1, q.id::text, imuflow_file_queued_stub('requeue')
FROM queued q
RETURNING key;

-- name: queued_to_verify
-- $1 file-job topic base name, $2 seconds since publication, $3 limit. `queued` files whose
-- latest job event was published at least that long ago (none waiting in the outbox), oldest
-- first, with where the broker put that event.
SELECT key, kafka_partition, kafka_offset
FROM (
    SELECT DISTINCT ON (o.key) o.key, o.kafka_partition, o.kafka_offset, o.published_at
    FROM outbox o
    JOIN imu_data_files f ON f.status = 'queued' AND f.id::text = o.key
    WHERE o.topic = $1 AND o.published_at IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.topic = $1 AND p.key = o.key
                      AND p.published_at IS NULL AND p.dead_at IS NULL)
    ORDER BY o.key, o.published_at DESC, o.id DESC
) latest
WHERE published_at < now() - make_interval(secs => $2)
ORDER BY published_at
LIMIT $3;

-- name: try_verify_lock
-- One service at a time reads queued events back (an arbitrary constant).
SELECT pg_try_advisory_xact_lock(7202614);

-- name: requeue_files
-- $1 file-job topic base name, $2 why (kept in last_error), $3 file ids. A FileQueued event
-- again for those still `queued` with no job event waiting in the outbox.
WITH pending AS (
    SELECT key FROM outbox WHERE published_at IS NULL AND dead_at IS NULL AND topic = $1
),
lost AS (
    SELECT f.id FROM imu_data_files f
    WHERE f.id = ANY($3::uuid[]) AND f.status = 'queued' AND f.id::text NOT IN (SELECT key FROM pending)
    FOR UPDATE OF f SKIP LOCKED
),
queued AS (
    UPDATE imu_data_files f
    SET queued_at = now(), updated_at = now(), last_error = $2
    FROM lost WHERE f.id = lost.id
    RETURNING f.*
)
INSERT INTO outbox (topic, key, payload)
SELECT $1, q.id::text, imuflow_file_queued_stub('requeue')
FROM queued q
RETURNING key;
