-- The preview pyramid (services/parser/preview_blocks.py, migration 0014).

-- name: forget_from
-- $1 file id, $2 sensors ('' = none), $3 the batch's first sample index of each sensor.
-- Blocks at or past where this batch starts are an earlier run's (a re-parse from scratch;
-- a resumed run's uncommitted batches rolled back with their blocks): they go.
DELETE FROM imu_preview_blocks b
USING unnest($2::text[], $3::bigint[]) AS s (sensor, first_index)
WHERE b.file_id = $1 AND b.sensor = s.sensor AND b.first_index >= s.first_index;

-- name: forget_summary
-- $1 file id. A run starts from sample 0: the summary kept for an earlier run goes.
DELETE FROM imu_file_summaries WHERE file_id = $1;
