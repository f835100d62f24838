-- Queries of the parser (services/parser/repository.py). The parser owns the resume
-- checkpoint, the delivery count and the terminal state of a job.

-- name: claim
-- $1 file id, $2 run. Every delivery counts as an attempt, a crash included.
UPDATE imu_data_files
SET attempts = attempts + 1,
    status = 'parsing',
    claimed_at = now(),
    processing_started_at = COALESCE(processing_started_at, now()),
    error_message = NULL,
    updated_at = now()
WHERE id = $1 AND run = $2 AND status IN ('uploaded', 'queued', 'parsing')
RETURNING id, user_id, filename, size_bytes, format, sensor, timezone, storage_uri, run,
          attempts, attempts_base, resume_offset, resume_samples, resume_batch_number, resume_state,
          rows_skipped, warnings, last_error;

-- name: status_of
-- $1 file id
SELECT status, run, attempts FROM imu_data_files WHERE id = $1;

-- name: set_format
-- $1 file id, $2 attempt, $3 format id, $4 units, $5 warnings (jsonb list)
UPDATE imu_data_files
SET format = $3, units = $4, warnings = $5, updated_at = now()
WHERE id = $1 AND attempts = $2;

-- name: checkpoint
-- $1 file id, $2 attempt, $3 run, $4 expected previous batch number, $5 new batch number,
-- $6 resume offset, $7 resume samples, $8 resume state, $9 rows skipped (total),
-- $10 warnings (jsonb list). Zero rows = fenced (another attempt owns the job) or cancelled.
UPDATE imu_data_files
SET resume_batch_number = $5,
    resume_offset = $6,
    resume_samples = $7,
    resume_state = $8,
    resume_checkpoint_at = now(),
    rows_skipped = $9,
    warnings = $10,
    last_error = NULL
WHERE id = $1 AND attempts = $2 AND run = $3 AND status = 'parsing'
  AND resume_batch_number = $4;

-- name: complete
-- $1 file id, $2 attempt, $3 run, $4 total samples
WITH done AS (
    UPDATE imu_data_files
    SET status = 'completed',
        samples_processed = $4,
        sample_count = $4,
        sample_count_exact = true,
        percent = 100,
        eta_seconds = 0, eta_low_seconds = 0, eta_high_seconds = 0,
        batch_number = resume_batch_number,
        bytes_processed = size_bytes,
        completed_at = now(),
        last_checkpoint_at = COALESCE(resume_checkpoint_at, now()),
        updated_at = now()
    WHERE id = $1 AND attempts = $2 AND run = $3 AND status = 'parsing'
    RETURNING id
)
SELECT record_file_event(id) FROM done;

-- name: fail
-- $1 file id, $2 attempt (NULL = whatever attempt), $3 run, $4 error message
WITH failed AS (
    UPDATE imu_data_files
    SET status = 'failed', error_message = $4, completed_at = now(), updated_at = now(),
        eta_seconds = NULL, eta_low_seconds = NULL, eta_high_seconds = NULL
    WHERE id = $1 AND ($2::int IS NULL OR attempts = $2) AND run = $3
      AND status IN ('uploaded', 'queued', 'parsing')
    RETURNING id
)
SELECT record_file_event(id) FROM failed;

-- name: note_transient_error
-- $1 file id, $2 attempt, $3 message
UPDATE imu_data_files SET last_error = $3 WHERE id = $1 AND attempts = $2;

-- name: hold_timeout
-- $1 milliseconds (text). Bounds the batch transaction: a statement running longer, or
-- the transaction idling longer (a hung parser holding the job's row lock), is ended.
SELECT set_config('statement_timeout', $1, true),
       set_config('idle_in_transaction_session_timeout', $1, true);
