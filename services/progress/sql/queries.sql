-- Queries of the progress service (services/progress/repository.py).

-- name: hold_timeout
-- $1 milliseconds (text), for the apply transaction only (a frozen applier holding the
-- files' row locks would block their parsers' checkpoints).
SELECT set_config('statement_timeout', $1, true),
       set_config('idle_in_transaction_session_timeout', $1, true);

-- name: lock_files
-- $1 file ids. The rows the applier is about to update, locked in id order.
SELECT id, user_id, status, run, attempts, samples_processed, percent, batch_number,
       bytes_processed, eta_state, processing_started_at
FROM imu_data_files
WHERE id = ANY($1::uuid[])
ORDER BY id
FOR UPDATE;

-- name: apply_progress
-- $1 id, $2 samples_processed, $3 sample_count, $4 bytes_processed, $5 percent,
-- $6 batch_number, $7 samples_per_second, $8 eta_seconds, $9 eta_low, $10 eta_high,
-- $11 eta_state, $12 last_checkpoint_at
UPDATE imu_data_files
SET samples_processed = $2,
    sample_count = $3,
    sample_count_exact = false,
    bytes_processed = $4,
    percent = $5,
    batch_number = $6,
    samples_per_second = $7,
    eta_seconds = $8,
    eta_low_seconds = $9,
    eta_high_seconds = $10,
    eta_state = $11,
    last_checkpoint_at = $12,
    updated_at = now()
WHERE id = $1 AND status = 'parsing';

-- name: reset_eta
-- $1 id, $2 eta_state. A new attempt measures its own speed.
UPDATE imu_data_files SET eta_state = $2 WHERE id = $1;

-- name: insert_batch_log
-- $1 file_id, $2 user_id, $3 run, $4 batch_number, $5 samples_in_batch,
-- $6 total_samples_processed, $7 batch_processing_time_ms, $8 started_at, $9 completed_at,
-- $10 attempt. The parser writes the row in the batch's own transaction (before the event
-- exists); this only fills in for a producer that does not, and never overwrites.
INSERT INTO streaming_processing_logs
    (file_id, user_id, run, batch_number, samples_in_batch, total_samples_processed,
     batch_processing_time_ms, started_at, completed_at, attempt)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (file_id, run, batch_number) DO NOTHING;

-- name: record_event
-- $1 file id
SELECT record_file_event($1);

-- name: list_files
-- $1 user id, $2 limit, $3 before (created_at, NULL = newest), $4 and $5 the cursor's
-- (created_at, id) (NULL = first page). Ordered by both: a ZIP's streams share one created_at.
SELECT * FROM file_records
WHERE user_id = $1 AND ($3::timestamptz IS NULL OR created_at < $3)
  AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $2;

-- name: get_file
-- $1 file id, $2 user id (NULL = any user: admin)
SELECT * FROM file_records WHERE id = $1 AND ($2::uuid IS NULL OR user_id = $2);

-- name: batch_log
-- $1 file id
SELECT batch_number, run, attempt, samples_in_batch, total_samples_processed,
       batch_processing_time_ms, started_at, completed_at
FROM streaming_processing_logs
WHERE file_id = $1
ORDER BY run, batch_number;

-- name: max_event_id
SELECT COALESCE(max(id), 0) FROM file_events;

-- name: events_after
-- $1 after id, $2 limit
SELECT id, file_id, user_id, event_type, data FROM file_events
WHERE id > $1 ORDER BY id LIMIT $2;

-- name: recent_events
-- $1 how many. The newest events, newest first, each row also carrying the log's pruned-through
-- mark; one row of NULL events when the log is empty (services/progress/recent.py).
SELECT m.pruned_through, e.id, e.file_id, e.user_id, e.event_type, e.data
FROM (SELECT COALESCE((SELECT pruned_through FROM file_events_retention), 0) AS pruned_through) m
LEFT JOIN LATERAL (
    SELECT id, file_id, user_id, event_type, data FROM file_events ORDER BY id DESC LIMIT $1
) e ON true;

-- name: replay
-- $1 after id, $2 user id (NULL = every user), $3 file id (NULL = every file), $4 limit.
-- The log after $1 in id order. A progress event that a later event of its file supersedes
-- comes without its data: replay sends every state change and only the latest progress.
SELECT e.id, e.file_id, e.user_id, e.event_type, e.superseded,
       CASE WHEN e.superseded THEN NULL ELSE e.data END AS data
FROM (
    SELECT p.*, p.event_type = 'progress' AND EXISTS (
               SELECT 1 FROM file_events l WHERE l.file_id = p.file_id AND l.id > p.id) AS superseded
    FROM file_events p
    WHERE p.id > $1 AND ($2::uuid IS NULL OR p.user_id = $2) AND ($3::uuid IS NULL OR p.file_id = $3)
    ORDER BY p.id
    LIMIT $4
) e
ORDER BY e.id;

-- name: resumable
-- $1 a client's Last-Event-ID. True when it is a position of this log (not past its newest
-- id) after which nothing was pruned, so a replay from it misses nothing.
SELECT $1 >= COALESCE((SELECT pruned_through FROM file_events_retention), 0)
       AND $1 <= (SELECT COALESCE(max(id), 0) FROM file_events);

-- name: snapshot
-- $1 user id (NULL = every user), $2 file id (NULL = every file), $3 limit. The current
-- records of the most recently changed files, each with the id of its newest event, oldest
-- change first: a client that drops mid-snapshot resumes from the last id it got, and the
-- replay after it holds exactly the files it has not seen yet. One index probe per file
-- (file_events_file_idx, newest first), however long each file's event log is. Files with
-- no event at all (only rows made by hand: every service records one) come first with a
-- NULL event_id; `newest_id` is the log's newest id in the same snapshot.
SELECT * FROM (
    SELECT r.*, l.event_id, (SELECT COALESCE(max(id), 0) FROM file_events) AS newest_id
    FROM (
        SELECT f.id, (SELECT max(e.id) FROM file_events e WHERE e.file_id = f.id) AS event_id
        FROM imu_data_files f
        WHERE ($1::uuid IS NULL OR f.user_id = $1) AND ($2::uuid IS NULL OR f.id = $2)
    ) l
    JOIN file_records r ON r.id = l.id
    ORDER BY l.event_id DESC NULLS LAST
    LIMIT $3
) newest
ORDER BY event_id NULLS FIRST;

-- name: prune_events
-- $1 retention (seconds), $2 batch size. Deletes events of finished files older than the
-- retention, except each file's newest, and raises the pruned-through mark; returns how many.
WITH doomed AS (
    SELECT e.id FROM file_events e JOIN imu_data_files f ON f.id = e.file_id
    WHERE e.created_at < now() - make_interval(secs => $1)
      AND f.status IN ('completed', 'failed', 'cancelled')
      AND EXISTS (SELECT 1 FROM file_events l WHERE l.file_id = e.file_id AND l.id > e.id)
    ORDER BY e.id
    LIMIT $2
), gone AS (
    DELETE FROM file_events e USING doomed d WHERE e.id = d.id RETURNING e.id
), mark AS (
    UPDATE file_events_retention
    SET pruned_through = GREATEST(pruned_through, (SELECT max(id) FROM gone)), pruned_at = now()
    WHERE EXISTS (SELECT 1 FROM gone)
)
SELECT count(*) FROM gone;

-- name: live_tokens
-- $1 token digests. Those still live (not revoked, not expired): streams opened with the
-- others are ended.
SELECT token_hash FROM api_tokens
WHERE token_hash = ANY($1::bytea[]) AND revoked_at IS NULL
  AND (expires_at IS NULL OR expires_at > now());

-- name: progress_row
-- $1 file id
SELECT * FROM get_file_processing_progress($1);

-- name: cancel
-- $1 file id, $2 user id. Stops at the parser's next batch boundary (its checkpoint
-- update requires status 'parsing').
WITH cancelled AS (
    UPDATE imu_data_files
    SET status = 'cancelled', completed_at = now(), updated_at = now(),
        eta_seconds = NULL, eta_low_seconds = NULL, eta_high_seconds = NULL
    WHERE id = $1 AND user_id = $2 AND status IN ('uploaded', 'queued', 'parsing')
    RETURNING id
)
SELECT record_file_event(id) FROM cancelled;

-- name: requeue_for_retry
-- $1 file id, $2 user id. A user's retry gets a fresh attempt budget and resumes from
-- the last checkpoint.
UPDATE imu_data_files
SET status = 'queued', queued_at = now(), error_message = NULL, completed_at = NULL,
    attempts_base = attempts, updated_at = now()
WHERE id = $1 AND user_id = $2 AND status IN ('failed', 'cancelled')
RETURNING id, user_id, storage_uri, filename, size_bytes, format, sensor, timezone, run;
