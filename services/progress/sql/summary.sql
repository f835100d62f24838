-- Summary of a file's stored samples (services/progress/summary.py).

-- name: file_summary
-- $1 file id. One row per sensor (NULL sensor = the file names none), from imu_samples.
SELECT sensor,
       count(*) AS samples,
       min(t_ns) AS t_min_ns, max(t_ns) AS t_max_ns,
       min(ax) AS ax_min, max(ax) AS ax_max,
       min(ay) AS ay_min, max(ay) AS ay_max,
       min(az) AS az_min, max(az) AS az_max,
       min(gx) AS gx_min, max(gx) AS gx_max,
       min(gy) AS gy_min, max(gy) AS gy_max,
       min(gz) AS gz_min, max(gz) AS gz_max,
       min(mx) AS mx_min, max(mx) AS mx_max,
       min(my) AS my_min, max(my) AS my_max,
       min(mz) AS mz_min, max(mz) AS mz_max
FROM imu_samples
WHERE file_id = $1
GROUP BY sensor
ORDER BY sensor NULLS FIRST;
