-- Queries of the ingest service (services/ingest/repository.py).

-- name: find_duplicate
-- $1 user_id, $2 sha256. The first upload of these bytes by this user.
SELECT id FROM imu_data_files
WHERE user_id = $1 AND sha256 = $2 AND parent_id IS NULL
ORDER BY created_at, id
LIMIT 1;

-- name: insert_file
-- $1 id, $2 user_id, $3 filename, $4 size_bytes, $5 sha256, $6 format, $7 sensor,
-- $8 timezone, $9 storage_uri, $10 duplicate_of, $11 parent_id
INSERT INTO imu_data_files
    (id, user_id, filename, size_bytes, sha256, format, sensor, timezone, storage_uri,
     duplicate_of, parent_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11);

-- name: record_event
-- $1 file id
SELECT record_file_event($1);

-- name: file_record
-- $1 file id, $2 user id
SELECT * FROM file_records WHERE id = $1 AND user_id = $2;

-- name: mark_archive
-- $1 file id, $2 warnings (jsonb list). A ZIP upload: its children are parsed, not it.
UPDATE imu_data_files SET format = 'zip', warnings = $2 WHERE id = $1;
