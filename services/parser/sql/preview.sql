-- The preview pyramid (services/parser/preview_blocks.py, migration 0014).

-- name: forget_file
-- $1 file id. A run starts from sample 0: blocks and the summary of earlier runs go.
WITH blocks AS (DELETE FROM imu_preview_blocks WHERE file_id = $1)
DELETE FROM imu_file_summaries WHERE file_id = $1;
