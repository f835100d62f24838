-- 0019: processing that overlaps the upload (docs/architecture.md, "Parsing while the
-- upload streams"). A large `POST /api/files` body on local storage gets its record and its
-- FileQueued at the first bytes of its file part; the parser reads the growing
-- `<id>.part`. Until the last byte is in, `upload_receiving` is true, `sha256` is '' and
-- `size_bytes` is the declared estimate; ingest clears it with the real size and sha256 in
-- one transaction (or fails the record, or removes it as a duplicate).
ALTER TABLE imu_data_files ADD COLUMN IF NOT EXISTS upload_receiving boolean NOT NULL DEFAULT false;
-- Bytes of the file part stored so far, and when the receiving ingest last said it is alive
-- (every UPLOAD_HEARTBEAT seconds); a receiving record it stopped touching was left by a
-- killed ingest and is failed by any ingest's sweep.
ALTER TABLE imu_data_files ADD COLUMN IF NOT EXISTS upload_bytes_received bigint;
ALTER TABLE imu_data_files ADD COLUMN IF NOT EXISTS upload_seen_at timestamptz;
CREATE INDEX IF NOT EXISTS imu_data_files_receiving_idx
    ON imu_data_files (upload_seen_at) WHERE upload_receiving;
