-- The signal preview (services/progress/preview.py) from the pyramid of migration 0014.
-- x is t_ns where the file has time ($timed), else sample_index; buckets are equal-width
-- over [lo, hi]: bucket = floor((x - lo) * n / (hi - lo + 1)), a block placed by its middle.

-- name: sensors
-- $1 file id. Per sensor ('' = none): extent and non-NULL values per axis, from the coarse level.
SELECT sensor, min(first_index) AS i0, max(first_index + n - 1) AS i1,
       min(t_first) AS t0, max(t_last) AS t1, sum(n)::bigint AS samples,
       bool_and(t_first IS NOT NULL) AS timed,
       sum(counts[1]) AS ax_n, sum(counts[2]) AS ay_n, sum(counts[3]) AS az_n, sum(counts[4]) AS gx_n, sum(counts[5]) AS gy_n, sum(counts[6]) AS gz_n, sum(counts[7]) AS mx_n, sum(counts[8]) AS my_n, sum(counts[9]) AS mz_n
FROM imu_preview_blocks
WHERE file_id = $1 AND level = 16384
GROUP BY sensor
ORDER BY sensor;

-- name: inner_buckets
-- $1 file id, $2 sensor, $3 level, $4 a, $5 b (the sub-range), $6 lo, $7 hi, $8 n, $9 timed,
-- $10 widest block. Blocks wholly inside [a, b] and at most $10 wide (half a bucket: a block
-- spanning a gap in time is wider, and is refined instead), aggregated per bucket.
WITH x AS (
    SELECT CASE WHEN $9 THEN t_first ELSE first_index END AS x0,
           CASE WHEN $9 THEN t_last ELSE first_index + n - 1 END AS x1, mins, maxs
    FROM imu_preview_blocks
    WHERE file_id = $1 AND sensor = $2 AND level = $3
)
SELECT least($8 - 1, floor(((x0 / 2 + x1 / 2) - $6)::float8 * $8 / ($7 - $6 + 1)::float8))::int AS b,
       min(mins[1]) AS ax_min, max(maxs[1]) AS ax_max,
       min(mins[2]) AS ay_min, max(maxs[2]) AS ay_max,
       min(mins[3]) AS az_min, max(maxs[3]) AS az_max,
       min(mins[4]) AS gx_min, max(maxs[4]) AS gx_max,
       min(mins[5]) AS gy_min, max(maxs[5]) AS gy_max,
       min(mins[6]) AS gz_min, max(maxs[6]) AS gz_max,
       min(mins[7]) AS mx_min, max(maxs[7]) AS mx_max,
       min(mins[8]) AS my_min, max(maxs[8]) AS my_max,
       min(mins[9]) AS mz_min, max(maxs[9]) AS mz_max
FROM x
WHERE x0 >= $4 AND x1 <= $5 AND x1 - x0 <= $10
GROUP BY 1;

-- name: edge_blocks
-- $1 file id, $2 sensor, $3 level, $4 a, $5 b, $6 timed, $7 widest block. Blocks that
-- straddle a or b, or inside but wider than $7.
SELECT * FROM (
    SELECT first_index, n,
           CASE WHEN $6 THEN t_first ELSE first_index END AS x0,
           CASE WHEN $6 THEN t_last ELSE first_index + n - 1 END AS x1
    FROM imu_preview_blocks
    WHERE file_id = $1 AND sensor = $2 AND level = $3
) e
WHERE x0 <= $5 AND x1 >= $4 AND (x0 < $4 OR x1 > $5 OR x1 - x0 > $7)
ORDER BY first_index;

-- name: index_span
-- $1 file id, $2 sensor, $3 a, $4 b, $5 timed. The sample indexes that can hold x in [a, b].
SELECT min(first_index) AS i0, max(first_index + n - 1) AS i1
FROM imu_preview_blocks
WHERE file_id = $1 AND sensor = $2 AND level = 256
  AND CASE WHEN $5 THEN t_last ELSE first_index + n - 1 END >= $3
  AND CASE WHEN $5 THEN t_first ELSE first_index END <= $4;

-- name: sample_buckets
-- $1 file id, $2 sensor ('' = NULL), $3 first index, $4 last index, $5 a, $6 b, $7 lo,
-- $8 hi, $9 n, $10 timed. The exact scan: stored samples with x in [a, b], per bucket.
WITH s AS (
    SELECT CASE WHEN $10 THEN t_ns ELSE sample_index END AS x, *
    FROM imu_samples
    WHERE file_id = $1 AND sensor IS NOT DISTINCT FROM NULLIF($2, '')
      AND sample_index BETWEEN $3 AND $4
)
SELECT least($9 - 1, floor((x - $7)::float8 * $9 / ($8 - $7 + 1)::float8))::int AS b,
       min(ax) AS ax_min, max(ax) AS ax_max,
       min(ay) AS ay_min, max(ay) AS ay_max,
       min(az) AS az_min, max(az) AS az_max,
       min(gx) AS gx_min, max(gx) AS gx_max,
       min(gy) AS gy_min, max(gy) AS gy_max,
       min(gz) AS gz_min, max(gz) AS gz_max,
       min(mx) AS mx_min, max(mx) AS mx_max,
       min(my) AS my_min, max(my) AS my_max,
       min(mz) AS mz_min, max(mz) AS mz_max
FROM s
WHERE x BETWEEN $5 AND $6
GROUP BY 1;

-- name: legacy_sensors
-- $1 file id. A file parsed before the pyramid existed: its extent from imu_samples.
SELECT coalesce(sensor, '') AS sensor, min(sample_index) AS i0, max(sample_index) AS i1,
       min(t_ns) AS t0, max(t_ns) AS t1, count(*) AS samples, bool_and(t_ns IS NOT NULL) AS timed,
       count(ax) AS ax_n, count(ay) AS ay_n, count(az) AS az_n, count(gx) AS gx_n, count(gy) AS gy_n, count(gz) AS gz_n, count(mx) AS mx_n, count(my) AS my_n, count(mz) AS mz_n
FROM imu_samples
WHERE file_id = $1
GROUP BY sensor
ORDER BY 1;
