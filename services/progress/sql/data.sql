-- Queries of "your data back": delete, re-parse and export (services/progress/lifecycle.py,
-- services/progress/export.py).

-- name: lock_family
-- $1 file id, $2 user id. The file and its children (a ZIP's streams), children first:
-- the order the archive triggers lock in (child, then parent).
SELECT id, parent_id, status, storage_uri
FROM imu_data_files
WHERE (id = $1 OR parent_id = $1) AND user_id = $2
ORDER BY (id = $1), id
FOR UPDATE;

-- name: family
-- $1 file id, $2 user id. The file and its children, unlocked.
SELECT id, parent_id, status, storage_uri
FROM imu_data_files
WHERE (id = $1 OR parent_id = $1) AND user_id = $2
ORDER BY (id = $1), id;

-- name: cancel_unfinished
-- $1 file ids. Stops running jobs: the parser's checkpoint is fenced on status 'parsing'.
-- Called for a ZIP's children before the ZIP itself (lock order: child, then parent).
WITH cancelled AS (
    UPDATE imu_data_files
    SET status = 'cancelled', completed_at = now(), updated_at = now(),
        eta_seconds = NULL, eta_low_seconds = NULL, eta_high_seconds = NULL
    WHERE id = ANY($1::uuid[]) AND status IN ('uploaded', 'queued', 'parsing')
    RETURNING id
)
SELECT record_file_event(id) FROM cancelled;

-- name: delete_samples
-- $1 file ids
DELETE FROM imu_samples WHERE file_id = ANY($1::uuid[]);

-- name: delete_events
-- $1 file ids
DELETE FROM file_events WHERE file_id = ANY($1::uuid[]);

-- name: delete_pending_outbox
-- $1 file ids as text. Unsent file events of deleted files (a parser would skip them anyway).
DELETE FROM outbox WHERE key = ANY($1::text[]) AND published_at IS NULL;

-- name: delete_batch_log
-- $1 file ids
DELETE FROM streaming_processing_logs WHERE file_id = ANY($1::uuid[]);

-- name: delete_files
-- $1 file ids. Children before the parent (the archive trigger then finds no parent).
DELETE FROM imu_data_files WHERE id = ANY($1::uuid[]);

-- name: reparse_file
-- $1 file ids, $2 format (NULL keeps, '' = detect again), $3 sensor (NULL keeps, '' = from
-- the file), $4 timezone (NULL keeps). A new run from scratch: the checkpoint, the displayed
-- progress and the attempt budget start over; the old run's parser is fenced by `run`.
UPDATE imu_data_files
SET run = run + 1,
    status = 'queued',
    queued_at = now(),
    format = CASE WHEN $2::text IS NULL THEN format ELSE NULLIF($2, '') END,
    sensor = CASE WHEN $3::text IS NULL THEN sensor ELSE NULLIF($3, '') END,
    timezone = COALESCE($4, timezone),
    attempts_base = attempts,
    resume_offset = 0, resume_samples = 0, resume_batch_number = 0, resume_state = '{}',
    resume_checkpoint_at = NULL, claimed_at = NULL, last_error = NULL,
    samples_processed = 0, sample_count = NULL, sample_count_exact = false,
    bytes_processed = 0, percent = 0, samples_per_second = NULL,
    eta_seconds = NULL, eta_low_seconds = NULL, eta_high_seconds = NULL, eta_state = '{}',
    batch_number = 0, rows_skipped = 0, warnings = '[]', units = '{}', error_message = NULL,
    processing_started_at = NULL, last_checkpoint_at = NULL, completed_at = NULL,
    updated_at = now()
WHERE id = ANY($1::uuid[])
RETURNING id, user_id, storage_uri, filename, size_bytes, format, sensor, timezone, run;

-- name: record_event
-- $1 file id
SELECT record_file_event($1);

-- name: export_layout
-- $1 file id. What the export's header needs: units, warnings, whether rows carry a
-- sensor (a multi-sensor file names the sensor on every row, so its first rows tell;
-- `sample_index = 0` lets the BRIN index skip to them instead of sorting the file).
SELECT f.units, f.warnings, f.filename,
       EXISTS (SELECT 1 FROM imu_samples s
               WHERE s.file_id = f.id AND s.sample_index = 0 AND s.sensor IS NOT NULL) AS has_sensor
FROM imu_data_files f WHERE f.id = $1;

-- name: index_range
-- $1 file id, $2 start ns (NULL = open), $3 end ns (NULL = open). First and last
-- sample_index in the time range (bucket width for plotting).
SELECT min(sample_index) AS lo, max(sample_index) AS hi
FROM imu_samples
WHERE file_id = $1 AND ($2::bigint IS NULL OR t_ns >= $2) AND ($3::bigint IS NULL OR t_ns < $3);
