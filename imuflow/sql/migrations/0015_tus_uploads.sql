-- Resumable uploads (tus 1.0.0, SPEC §7): one row per upload, so that a restarted or a
-- second ingest continues any of them. The bytes live in storage under the upload's id
-- (a local `<id>.tus` file, or an S3 multipart upload whose parts are listed here plus a
-- `<id>.tail` object holding the bytes after the last full part, shorter than 5 MiB).
-- Which ingest receives a PATCH is decided by a session advisory lock on the id, taken for
-- the PATCH's whole body (a second PATCH at once gets 409; a killed ingest's lock goes
-- with its connection).
CREATE TABLE IF NOT EXISTS tus_uploads (
    id             uuid PRIMARY KEY,             -- also the file id of the record it becomes
    user_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    upload_length  bigint NOT NULL CHECK (upload_length > 0),
    upload_offset  bigint NOT NULL DEFAULT 0,
    metadata       jsonb NOT NULL DEFAULT '{}',  -- filename, format, sensor, timezone, allow_duplicate
    s3_upload_id   text,                         -- NULL on local disk (or before the first part)
    s3_parts       jsonb NOT NULL DEFAULT '[]',  -- [{"PartNumber": n, "ETag": "...", "Size": bytes}]
    tail_bytes     bigint NOT NULL DEFAULT 0,    -- S3: bytes in `<id>.tail` after the last part
    -- The whole file's sha256, set once the last byte is stored (see docs/architecture.md,
    -- "Resumable uploads": hashlib cannot save its state, so a hash interrupted by a
    -- restart is recomputed from the stored object at completion).
    sha256         text,
    file_id        uuid,                         -- the record it became (a duplicate: the first)
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    completed_at   timestamptz
);

CREATE INDEX IF NOT EXISTS tus_uploads_pending ON tus_uploads (user_id) WHERE completed_at IS NULL;
CREATE INDEX IF NOT EXISTS tus_uploads_expiry ON tus_uploads (expires_at);
