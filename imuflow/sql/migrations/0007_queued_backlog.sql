-- imuflow schema, version 7: a backlog is not a lost event.
--
-- 0002 counted a queued job as stuck (its Kafka event lost, e.g. when the broker was
-- restarted empty) once it waited STUCK_AFTER. With a backlog (50 uploads, two busy
-- parsers) that is a normal wait: it raised the stuck gauge and alert and republished
-- events every STUCK_AFTER. Now, while any parser claimed, checkpointed or finished a job
-- within the threshold, a queued job gets 6 x the threshold (QUEUE_PATIENCE) before it
-- counts as stuck; with the parsers idle, a queued job is still stuck after the threshold.

CREATE OR REPLACE FUNCTION streaming_job_health(threshold interval DEFAULT NULL)
RETURNS TABLE (
    file_id uuid, status text, attempts integer, since timestamptz, idle_seconds double precision,
    median_batch_seconds double precision, limit_seconds double precision, is_stuck boolean
)
LANGUAGE sql STABLE AS $$
    WITH cfg AS (
        SELECT EXTRACT(EPOCH FROM COALESCE(threshold, c.stuck_after))::double precision AS base,
               c.batch_interval_multiple AS multiple
        FROM (SELECT COALESCE((SELECT stuck_after FROM imuflow_config), interval '300 seconds') AS stuck_after,
                     COALESCE((SELECT batch_interval_multiple FROM imuflow_config), 10) AS batch_interval_multiple) c
    ),
    jobs AS (
        SELECT f.id, f.status, f.run, f.attempts,
               streaming_job_since(f.status, f.resume_checkpoint_at, f.claimed_at,
                                   f.processing_started_at, f.queued_at, f.updated_at) AS since
        FROM imu_data_files f
        WHERE f.status IN ('queued', 'parsing')
    ),
    -- Whether any parser claimed, checkpointed or finished a job within the threshold.
    activity AS (
        SELECT EXISTS (
            SELECT 1 FROM imu_data_files a, cfg
            WHERE GREATEST(a.resume_checkpoint_at, a.claimed_at, a.completed_at)
                  > now() - make_interval(secs => cfg.base)
        ) AS busy
    ),
    measured AS (
        SELECT j.*, m.median_s,
               CASE WHEN j.status = 'parsing'
                    THEN GREATEST(cfg.base, cfg.multiple * COALESCE(m.median_s, 0))
                    -- Parsers at work: a queued job is waiting its turn, not lost, so it
                    -- gets QUEUE_PATIENCE x the threshold before its event counts as lost.
                    WHEN activity.busy THEN cfg.base * 6
                    ELSE cfg.base END AS limit_s,
               EXTRACT(EPOCH FROM (now() - j.since))::double precision AS idle_s
        FROM jobs j
        CROSS JOIN cfg
        CROSS JOIN activity
        LEFT JOIN LATERAL (
            -- Interval of a batch: the gap since the previous batch of the same attempt
            -- (parse + store + publish), at least its own processing time.
            SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x.interval_s) AS median_s
            FROM (
                SELECT GREATEST(
                    l.batch_processing_time_ms / 1000.0,
                    EXTRACT(EPOCH FROM l.completed_at
                        - lag(l.completed_at) OVER (PARTITION BY l.attempt ORDER BY l.batch_number))
                )::double precision AS interval_s
                FROM (
                    SELECT * FROM streaming_processing_logs s
                    WHERE s.file_id = j.id AND s.run = j.run
                    ORDER BY s.batch_number DESC
                    LIMIT 100
                ) l
            ) x
        ) m ON j.status = 'parsing'
    )
    SELECT id, status, attempts, since, idle_s, median_s, limit_s, idle_s > limit_s
    FROM measured;
$$;
