-- Queries of resumable uploads (services/ingest/tus_repository.py).

-- name: create_upload
-- $1 id, $2 user_id, $3 upload_length, $4 metadata (jsonb), $5 expiry seconds (float)
INSERT INTO tus_uploads (id, user_id, upload_length, metadata, expires_at)
VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
RETURNING *;

-- name: pending_count
-- $1 user_id. Unfinished, unexpired uploads of this user.
SELECT count(*) FROM tus_uploads
WHERE user_id = $1 AND completed_at IS NULL AND expires_at > now();

-- name: get_upload
-- $1 id, $2 user_id. Expired unfinished uploads are gone for the client (the sweeper removes them).
SELECT * FROM tus_uploads
WHERE id = $1 AND user_id = $2 AND (completed_at IS NOT NULL OR expires_at > now());

-- name: save_progress
-- $1 id, $2 upload_offset, $3 s3_upload_id, $4 s3_parts (jsonb), $5 tail_bytes, $6 expiry seconds
UPDATE tus_uploads
SET upload_offset = $2, s3_upload_id = $3, s3_parts = $4, tail_bytes = $5,
    updated_at = now(), expires_at = now() + make_interval(secs => $6)
WHERE id = $1;

-- name: save_sha256
-- $1 id, $2 sha256
UPDATE tus_uploads SET sha256 = $2, updated_at = now() WHERE id = $1;

-- name: mark_completed
-- $1 id, $2 file_id. Kept (for HEAD to name the record) until it expires like any other row.
UPDATE tus_uploads
SET completed_at = now(), file_id = $2, updated_at = now()
WHERE id = $1;

-- name: delete_upload
-- $1 id
DELETE FROM tus_uploads WHERE id = $1;

-- name: expired_uploads
-- $1 limit. Rows past their expiry: unfinished ones are cleaned from storage, finished ones forgotten.
SELECT * FROM tus_uploads WHERE expires_at <= now() ORDER BY expires_at LIMIT $1;

-- name: expired_upload
-- $1 upload id. The row again, under its lock, if it is still expired (a PATCH that
-- finished meanwhile moved its expiry).
SELECT * FROM tus_uploads WHERE id = $1 AND expires_at <= now();

-- name: unfinished_ids
-- Unfinished uploads (the start-up storage sweep must leave their multipart uploads alone).
SELECT id FROM tus_uploads WHERE completed_at IS NULL;

-- name: in_progress
-- Unfinished, unexpired uploads of every user (the imuflow_tus_uploads_in_progress gauge).
SELECT count(*) FROM tus_uploads WHERE completed_at IS NULL AND expires_at > now();

-- name: try_lock
-- $1 lock key (bigint from the upload id). Session lock held for one PATCH's whole body.
SELECT pg_try_advisory_lock($1);

-- name: unlock
-- $1 lock key
SELECT pg_advisory_unlock($1);
