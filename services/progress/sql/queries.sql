-- Queries of the progress service (services/progress/repository.py).

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
-- $1 user id, $2 limit, $3 before (created_at cursor, NULL = newest)
SELECT * FROM file_records
WHERE user_id = $1 AND ($3::timestamptz IS NULL OR created_at < $3)
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

-- name: replay
-- $1 after id, $2 user id (NULL = every user), $3 file id (NULL = every file), $4 limit
SELECT id, file_id, user_id, event_type, data FROM file_events
WHERE id > $1 AND ($2::uuid IS NULL OR user_id = $2) AND ($3::uuid IS NULL OR file_id = $3)
ORDER BY id LIMIT $4;

-- name: oldest_event_id
SELECT COALESCE(min(id), 0) FROM file_events;

-- name: snapshot
-- $1 user id (NULL = every user), $2 file id (NULL = every file), $3 limit
SELECT * FROM file_records
WHERE ($1::uuid IS NULL OR user_id = $1) AND ($2::uuid IS NULL OR id = $2)
ORDER BY created_at DESC, id DESC
LIMIT $3;

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
