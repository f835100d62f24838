-- Queries of the parser (services/parser/repository.py). The parser owns the resume
-- checkpoint, the delivery count and the terminal state of a job.

-- name: claim
-- $1 file id, $2 run. Every claim takes a new lease (the fencing token of every write
-- below). Every delivery counts as an attempt, a crash included; the claim that resumes a
-- job after a voluntary fair-share yield does not (SPEC §4 MAX_ATTEMPTS).
UPDATE imu_data_files
SET attempts = attempts + CASE WHEN yielded_at IS NULL THEN 1 ELSE 0 END,
    lease = lease + 1,
    yielded_at = NULL,
    deferrals = 0,
    status = 'parsing',
    claimed_at = now(),
    processing_started_at = COALESCE(processing_started_at, now()),
    error_message = NULL,
    updated_at = now()
WHERE id = $1 AND run = $2 AND status IN ('uploaded', 'queued', 'parsing')
RETURNING id, user_id, filename, size_bytes, format, sensor, timezone, storage_uri, run,
          attempts, lease, attempts_base, resume_offset, resume_samples, resume_batch_number,
          resume_state, rows_skipped, warnings, last_error, upload_receiving;

-- name: status_of
-- $1 file id
SELECT status, run, attempts, lease, upload_receiving, size_bytes FROM imu_data_files WHERE id = $1;

-- name: set_format
-- $1 file id, $2 lease, $3 run, $4 format id, $5 units, $6 warnings (jsonb list). Fenced
-- like a checkpoint: a late old attempt must not overwrite what a re-parse reset.
UPDATE imu_data_files
SET format = $4, units = $5, warnings = $6, updated_at = now()
WHERE id = $1 AND lease = $2 AND run = $3 AND status = 'parsing';

-- name: checkpoint
-- $1 file id, $2 lease, $3 run, $4 expected previous batch number, $5 new batch number,
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
WHERE id = $1 AND lease = $2 AND run = $3 AND status = 'parsing'
  AND resume_batch_number = $4;

-- name: complete
-- $1 file id, $2 lease, $3 run, $4 total samples
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
    WHERE id = $1 AND lease = $2 AND run = $3 AND status = 'parsing'
    RETURNING id
)
SELECT record_file_event(id) FROM done;

-- name: fail
-- $1 file id, $2 lease (NULL = whatever lease), $3 run, $4 error message
WITH failed AS (
    UPDATE imu_data_files
    SET status = 'failed', error_message = $4, completed_at = now(), updated_at = now(),
        eta_seconds = NULL, eta_low_seconds = NULL, eta_high_seconds = NULL
    WHERE id = $1 AND ($2::bigint IS NULL OR lease = $2) AND run = $3
      AND status IN ('uploaded', 'queued', 'parsing')
    RETURNING id
)
SELECT record_file_event(id) FROM failed;

-- name: note_transient_error
-- $1 file id, $2 lease, $3 message
UPDATE imu_data_files SET last_error = $3 WHERE id = $1 AND lease = $2;

-- name: hold_timeout
-- $1 milliseconds (text). Bounds the batch transaction: a statement running longer, or
-- the transaction idling longer (a hung parser holding the job's row lock), is ended.
SELECT set_config('statement_timeout', $1, true),
       set_config('idle_in_transaction_session_timeout', $1, true);

-- name: insert_batch_log
-- $1 file_id, $2 user_id, $3 run, $4 batch_number, $5 samples_in_batch,
-- $6 total_samples_processed, $7 batch_processing_time_ms, $8 started_at, $9 completed_at,
-- $10 attempt. In the batch's own transaction, so every committed batch has its row
-- whatever the broker loses. The parser's row wins over one the progress applier wrote
-- from an event (it writes only where none exists).
INSERT INTO streaming_processing_logs
    (file_id, user_id, run, batch_number, samples_in_batch, total_samples_processed,
     batch_processing_time_ms, started_at, completed_at, attempt)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (file_id, run, batch_number) DO UPDATE
SET user_id = EXCLUDED.user_id, samples_in_batch = EXCLUDED.samples_in_batch,
    total_samples_processed = EXCLUDED.total_samples_processed,
    batch_processing_time_ms = EXCLUDED.batch_processing_time_ms,
    started_at = EXCLUDED.started_at, completed_at = EXCLUDED.completed_at,
    attempt = EXCLUDED.attempt;

-- name: behind_in_fair_order
-- $1 file id. Whether another user with queued work comes before this file's user in the
-- fair order (imuflow_fair_order): then a claim of this file would take a slot from them.
WITH o AS (SELECT * FROM imuflow_fair_order()),
     me AS (
         SELECT f.user_id,
                COALESCE(o.running, 0) AS running,
                COALESCE(o.served, '-infinity'::timestamptz) AS served
         FROM imu_data_files f LEFT JOIN o ON o.user_id = f.user_id
         WHERE f.id = $1
     )
SELECT EXISTS (
    SELECT 1 FROM o, me
    WHERE o.waiting AND o.user_id <> me.user_id
      AND (o.running, o.served, o.user_id) < (me.running, me.served, me.user_id)
);

-- name: others_waiting
-- $1 user id of a running job. Whether another user has queued work and fewer running
-- jobs: then this user's job yields its parser at its next batch boundary.
WITH o AS (SELECT * FROM imuflow_fair_order())
SELECT EXISTS (
    SELECT 1 FROM o
    WHERE o.waiting AND o.user_id <> $1
      AND o.running < COALESCE((SELECT running FROM o WHERE user_id = $1), 0)
);

-- name: defer
-- $1 file id, $2 run, $3 most deferrals between two claims. Back of the queue without
-- being claimed (no attempt, no lease); the caller republishes its event in the same
-- transaction. Past the limit the job is claimed: the work it deferred to may be out of
-- this parser's reach (another parser's busy partition) or lost.
UPDATE imu_data_files
SET status = 'queued', queued_at = now(), updated_at = now(), deferrals = deferrals + 1
WHERE id = $1 AND run = $2 AND status IN ('uploaded', 'queued') AND deferrals < $3
RETURNING id, user_id, storage_uri, filename, size_bytes, format, sensor, timezone, run;

-- name: yield_job
-- $1 file id, $2 lease, $3 run, $4 the batch number just committed. A voluntary yield at
-- a batch boundary: back to queued from the checkpoint; the claim that resumes it counts
-- no attempt (yielded_at). The caller republishes its event in the same transaction.
UPDATE imu_data_files
SET status = 'queued', queued_at = now(), yielded_at = now(), updated_at = now()
WHERE id = $1 AND lease = $2 AND run = $3 AND status = 'parsing' AND resume_batch_number = $4
RETURNING id, user_id, storage_uri, filename, size_bytes, format, sensor, timezone, run;

-- name: release_receiving
-- $1 file id, $2 lease, $3 run, $4 why ('binary' | 'paused'). A job whose upload still
-- streams is given back (services/parser/upload_follower.py): a binary file cannot be read
-- growing (its reader sizes the file first), a paused upload must not hold a parser slot.
-- Back to queued, its claim's attempt kept but the next claim counting none (yielded_at);
-- ingest queues its event again, once (`upload_parked`, services/ingest/sql/early.sql):
-- at the next bytes (paused) or once the last byte is stored (both). Zero rows: the upload
-- finished meanwhile, so the job can be parsed whole.
UPDATE imu_data_files
SET status = 'queued', queued_at = now(), yielded_at = now(), updated_at = now(), upload_parked = $4
WHERE id = $1 AND lease = $2 AND run = $3 AND status = 'parsing' AND upload_receiving
RETURNING id;

-- name: record_event
-- $1 file id. Append the file's displayed record to the SSE event log (file_events).
SELECT record_file_event($1);
