-- Summary of a file's stored samples (services/progress/summary.py).

-- name: block_summary
-- $1 file id. One row per sensor ('' = the file names none), from the fine blocks of the
-- preview pyramid (migration 0014). The period is the median of the blocks' median
-- intervals (gaps do not bias it); gaps are intervals longer than 5 periods, inside a
-- block (counted by the parser against the block's own median) or between two blocks.
WITH b AS (
    SELECT *, t_first - lag(t_last) OVER (PARTITION BY sensor ORDER BY first_index) AS dt_between
    FROM imu_preview_blocks
    WHERE file_id = $1 AND level = 256
), m AS (
    SELECT sensor, percentile_cont(0.5) WITHIN GROUP (ORDER BY dt_median) AS period
    FROM b WHERE dt_median > 0
    GROUP BY sensor
)
SELECT b.sensor, sum(b.n)::bigint AS samples,
       min(b.t_first) AS t_min_ns, max(b.t_last) AS t_max_ns, m.period,
       greatest(max(b.dt_max), max(b.dt_between)) AS longest_gap_ns,
       (coalesce(sum(b.gaps), 0) + count(*) FILTER (WHERE b.dt_between > 5 * m.period))::bigint AS gaps,
       min(b.mins[1]) AS ax_min, max(b.maxs[1]) AS ax_max, sum(b.sums[1]) / nullif(sum(b.counts[1]), 0) AS ax_mean, sum(b.clipped[1]) AS ax_clipped,
       min(b.mins[2]) AS ay_min, max(b.maxs[2]) AS ay_max, sum(b.sums[2]) / nullif(sum(b.counts[2]), 0) AS ay_mean, sum(b.clipped[2]) AS ay_clipped,
       min(b.mins[3]) AS az_min, max(b.maxs[3]) AS az_max, sum(b.sums[3]) / nullif(sum(b.counts[3]), 0) AS az_mean, sum(b.clipped[3]) AS az_clipped,
       min(b.mins[4]) AS gx_min, max(b.maxs[4]) AS gx_max, sum(b.sums[4]) / nullif(sum(b.counts[4]), 0) AS gx_mean, sum(b.clipped[4]) AS gx_clipped,
       min(b.mins[5]) AS gy_min, max(b.maxs[5]) AS gy_max, sum(b.sums[5]) / nullif(sum(b.counts[5]), 0) AS gy_mean, sum(b.clipped[5]) AS gy_clipped,
       min(b.mins[6]) AS gz_min, max(b.maxs[6]) AS gz_max, sum(b.sums[6]) / nullif(sum(b.counts[6]), 0) AS gz_mean, sum(b.clipped[6]) AS gz_clipped,
       min(b.mins[7]) AS mx_min, max(b.maxs[7]) AS mx_max, sum(b.sums[7]) / nullif(sum(b.counts[7]), 0) AS mx_mean, sum(b.clipped[7]) AS mx_clipped,
       min(b.mins[8]) AS my_min, max(b.maxs[8]) AS my_max, sum(b.sums[8]) / nullif(sum(b.counts[8]), 0) AS my_mean, sum(b.clipped[8]) AS my_clipped,
       min(b.mins[9]) AS mz_min, max(b.maxs[9]) AS mz_max, sum(b.sums[9]) / nullif(sum(b.counts[9]), 0) AS mz_mean, sum(b.clipped[9]) AS mz_clipped
FROM b LEFT JOIN m ON m.sensor = b.sensor
GROUP BY b.sensor, m.period
ORDER BY b.sensor;

-- name: file_summary
-- $1 file id. A file parsed before the pyramid existed: the same from imu_samples.
SELECT coalesce(sensor, '') AS sensor,
       count(*) AS samples,
       min(t_ns) AS t_min_ns, max(t_ns) AS t_max_ns,
       min(ax) AS ax_min, max(ax) AS ax_max, avg(ax) AS ax_mean, NULL::bigint AS ax_clipped,
       min(ay) AS ay_min, max(ay) AS ay_max, avg(ay) AS ay_mean, NULL::bigint AS ay_clipped,
       min(az) AS az_min, max(az) AS az_max, avg(az) AS az_mean, NULL::bigint AS az_clipped,
       min(gx) AS gx_min, max(gx) AS gx_max, avg(gx) AS gx_mean, NULL::bigint AS gx_clipped,
       min(gy) AS gy_min, max(gy) AS gy_max, avg(gy) AS gy_mean, NULL::bigint AS gy_clipped,
       min(gz) AS gz_min, max(gz) AS gz_max, avg(gz) AS gz_mean, NULL::bigint AS gz_clipped,
       min(mx) AS mx_min, max(mx) AS mx_max, avg(mx) AS mx_mean, NULL::bigint AS mx_clipped,
       min(my) AS my_min, max(my) AS my_max, avg(my) AS my_mean, NULL::bigint AS my_clipped,
       min(mz) AS mz_min, max(mz) AS mz_max, avg(mz) AS mz_mean, NULL::bigint AS mz_clipped
FROM imu_samples
WHERE file_id = $1
GROUP BY sensor
ORDER BY sensor NULLS FIRST;

-- name: sample_intervals
-- $1 file id. Period (median interval), longest interval and gaps per sensor, from
-- imu_samples (older files only: this sorts the whole file).
WITH d AS (
    SELECT coalesce(sensor, '') AS sensor,
           t_ns - lag(t_ns) OVER (PARTITION BY sensor ORDER BY sample_index) AS dt
    FROM imu_samples
    WHERE file_id = $1
), m AS (
    SELECT sensor, percentile_cont(0.5) WITHIN GROUP (ORDER BY dt) AS period
    FROM d WHERE dt IS NOT NULL
    GROUP BY sensor
)
SELECT d.sensor, m.period, max(d.dt) AS longest_gap_ns,
       count(*) FILTER (WHERE d.dt > 5 * m.period) AS gaps
FROM d JOIN m ON m.sensor = d.sensor
GROUP BY d.sensor, m.period;

-- name: cached
-- $1 file id, $2 run
SELECT summary FROM imu_file_summaries WHERE file_id = $1 AND run = $2;

-- name: keep
-- $1 file id, $2 run, $3 summary (jsonb)
INSERT INTO imu_file_summaries (file_id, run, summary) VALUES ($1, $2, $3)
ON CONFLICT (file_id) DO UPDATE SET run = excluded.run, summary = excluded.summary, computed_at = now();
