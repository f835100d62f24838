-- Queries of the transactional outbox relay (imuflow/outbox.py).

-- name: claim_pending
-- $1 limit. Rows stay locked until the relay's transaction ends; other relays skip them.
SELECT id, topic, key, payload
FROM outbox
WHERE published_at IS NULL
ORDER BY id
LIMIT $1
FOR UPDATE SKIP LOCKED;

-- name: mark_published
-- $1 ids
UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[]);

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
DELETE FROM outbox WHERE published_at < now() - $1::interval;
