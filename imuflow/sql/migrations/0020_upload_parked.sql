-- 0020: a parse that overlaps a resumable (tus) upload (docs/architecture.md, "Parsing
-- while the upload streams"). A parser that waited `IMUFLOW_UPLOAD_PAUSE_YIELD` seconds at
-- the end of a growing upload gives the job back instead of holding a slot and a paused
-- partition; `upload_parked` says why it is queued without an event in flight:
--   'paused': no bytes came for a while; the next bytes ingest stores queue it again.
--   'binary': its reader needs the whole file; the upload's end queues it again.
-- Whoever queues it again clears the column in the transaction that enqueues the event,
-- so a parked job gets exactly one new FileQueued.
ALTER TABLE imu_data_files ADD COLUMN IF NOT EXISTS upload_parked text
    CHECK (upload_parked IN ('paused', 'binary'));

-- A queued job whose upload is still being received is ingest's to queue again (above),
-- not a lost event: the watchdog leaves it alone (a tus upload may pause for hours).
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
          AND NOT (f.status = 'queued' AND f.upload_receiving)
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
