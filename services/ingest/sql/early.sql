-- Queries of uploads recorded at their first bytes (services/ingest/early_repository.py):
-- processing that overlaps the upload (docs/architecture.md, "Parsing while the upload streams").

-- name: mark_receiving
-- $1 file id, $2 bytes received. Right after insert_file, in its transaction.
UPDATE imu_data_files
SET upload_receiving = true, upload_bytes_received = $2, upload_seen_at = now()
WHERE id = $1;

-- name: touch
-- $1 file id, $2 bytes received. The receiving ingest is alive (its heartbeat).
UPDATE imu_data_files
SET upload_bytes_received = $2, upload_seen_at = now()
WHERE id = $1 AND upload_receiving;

-- name: lock_receiving
-- $1 file id. The record of an upload still receiving, locked: its last transaction (finish,
-- duplicate, fail) waits for a batch being committed and fences every later one.
SELECT id, user_id, status, upload_parked FROM imu_data_files WHERE id = $1 AND upload_receiving FOR UPDATE;

-- name: finish
-- $1 file id, $2 size in bytes, $3 sha256, $4 duplicate_of. The last byte is stored: the
-- parser may now read to the real end and complete the job. A job the parser gave back
-- (`upload_parked`: a binary file, or a paused upload) gets its event again (the caller).
UPDATE imu_data_files
SET size_bytes = $2, sha256 = $3, duplicate_of = $4, upload_receiving = false, upload_parked = NULL,
    upload_bytes_received = $2, upload_seen_at = now(), updated_at = now()
WHERE id = $1 AND upload_receiving
RETURNING id, user_id, storage_uri, filename, size_bytes, format, sensor, timezone, run, status;

-- name: fail
-- $1 file id, $2 reason. The upload stopped: the record says so (a job the user cancelled
-- meanwhile stays cancelled) and is no longer receiving.
WITH failed AS (
    UPDATE imu_data_files
    SET status = CASE WHEN status IN ('uploaded', 'queued', 'parsing') THEN 'failed' ELSE status END,
        error_message = CASE WHEN status IN ('uploaded', 'queued', 'parsing') THEN $2 ELSE error_message END,
        completed_at = COALESCE(completed_at, now()), updated_at = now(),
        eta_seconds = NULL, eta_low_seconds = NULL, eta_high_seconds = NULL,
        upload_receiving = false, upload_parked = NULL
    WHERE id = $1 AND upload_receiving
    RETURNING id
)
SELECT record_file_event(id) FROM failed;

-- name: requeue_paused
-- $1 file id. Bytes arrived for a job the parser gave back because its upload paused: queue
-- it again, once (the caller enqueues its FileQueued in this transaction).
UPDATE imu_data_files
SET upload_parked = NULL, queued_at = now(), updated_at = now()
WHERE id = $1 AND upload_receiving AND upload_parked = 'paused' AND status = 'queued'
RETURNING id, user_id, storage_uri, filename, size_bytes, format, sensor, timezone, run, status;

-- name: stale
-- $1 seconds. Receiving records whose ingest stopped touching them (it was killed). Not a
-- resumable upload's: one that stops is paused (the client continues on any ingest) until
-- it expires or is terminated (services/ingest/tus_expiry.py, tus.py fail it then).
SELECT id, storage_uri, size_bytes, upload_bytes_received
FROM imu_data_files f
WHERE upload_receiving AND upload_seen_at < now() - make_interval(secs => $1)
  AND NOT EXISTS (SELECT 1 FROM tus_uploads t WHERE t.id = f.id)
ORDER BY upload_seen_at
LIMIT 100;

-- name: delete_samples
-- $1 file id. What a stopped or duplicate speculative parse stored.
DELETE FROM imu_samples WHERE file_id = $1;

-- name: delete_preview
-- $1 file id
DELETE FROM imu_preview_blocks WHERE file_id = $1;

-- name: delete_batch_log
-- $1 file id
DELETE FROM streaming_processing_logs WHERE file_id = $1;

-- name: delete_pending_outbox
-- $1 file id as text
DELETE FROM outbox WHERE key = $1 AND published_at IS NULL;

-- name: delete_events
-- $1 file id
DELETE FROM file_events WHERE file_id = $1;

-- name: delete_file
-- $1 file id
DELETE FROM imu_data_files WHERE id = $1;

-- name: receiving
-- $1 file id. Whether the record exists and whether its upload is still being received.
SELECT upload_receiving FROM imu_data_files WHERE id = $1;
