-- imuflow schema, version 2: operations. The seed's stuck-job functions and monitoring
-- views (SPEC §4), kept by name, with ONE stuck rule (SPEC §6) shared by all of them.

-- What SQL must know of the services' settings. One row; the progress service writes its
-- IMUFLOW_STUCK_AFTER / IMUFLOW_MAX_ATTEMPTS here at startup (last writer wins).
CREATE TABLE imuflow_config (
    singleton                boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    stuck_after              interval NOT NULL DEFAULT interval '300 seconds'
        CHECK (stuck_after > interval '0'),
    max_attempts             integer NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    -- A job is not stuck while its silence is below this many median batch intervals,
    -- so a file whose batches are naturally slow is never requeued for being slow.
    batch_interval_multiple  double precision NOT NULL DEFAULT 10 CHECK (batch_interval_multiple > 0),
    updated_at               timestamptz NOT NULL DEFAULT now()
);
INSERT INTO imuflow_config DEFAULT VALUES;

-- How far an operator task has read an append-only log (the alert notifier: file_events).
CREATE TABLE ops_cursors (
    name     text PRIMARY KEY,
    last_id  bigint NOT NULL
);

-- When the clock of an unfinished job started. Parsing: the last resume checkpoint, or
-- the claim if it is newer (a new delivery restarts the clock) or there is none yet.
-- Queued: when it was queued (its Kafka event may have been lost, e.g. a broker restart).
CREATE FUNCTION streaming_job_since(
    status text, resume_checkpoint_at timestamptz, claimed_at timestamptz,
    processing_started_at timestamptz, queued_at timestamptz, updated_at timestamptz
) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE status
        WHEN 'parsing' THEN COALESCE(GREATEST(resume_checkpoint_at, claimed_at, processing_started_at), updated_at)
        WHEN 'queued' THEN COALESCE(queued_at, updated_at)
    END;
$$;

-- The stuck rule, evaluated for every queued or parsing job. `threshold` NULL = the
-- configured STUCK_AFTER. A parsing job is stuck when its clock is older than the larger
-- of the threshold and `batch_interval_multiple` x its median batch interval (the last
-- 100 batches of its current run, from the batch log); a queued job when its clock is
-- older than the threshold.
CREATE FUNCTION streaming_job_health(threshold interval DEFAULT NULL)
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
    measured AS (
        SELECT j.*, m.median_s,
               CASE WHEN j.status = 'parsing'
                    THEN GREATEST(cfg.base, cfg.multiple * COALESCE(m.median_s, 0))
                    ELSE cfg.base END AS limit_s,
               EXTRACT(EPOCH FROM (now() - j.since))::double precision AS idle_s
        FROM jobs j
        CROSS JOIN cfg
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

-- The seed's stuck-job query: every job the stuck rule matches now, longest stuck first.
CREATE FUNCTION get_stuck_streaming_processes(threshold interval DEFAULT NULL)
RETURNS TABLE (
    file_id uuid, user_id uuid, owner text, filename text, status text, attempts integer,
    attempts_used integer, max_attempts integer, run integer, samples_processed bigint,
    resume_samples bigint, resume_batch_number integer, stuck_since timestamptz,
    stuck_for_seconds double precision, limit_seconds double precision,
    median_batch_seconds double precision, last_error text
)
LANGUAGE sql STABLE AS $$
    SELECT f.id, f.user_id, u.name, f.filename, f.status, f.attempts, f.attempts - f.attempts_base,
           COALESCE((SELECT max_attempts FROM imuflow_config), 5), f.run, f.samples_processed,
           f.resume_samples, f.resume_batch_number, h.since, h.idle_seconds, h.limit_seconds,
           h.median_batch_seconds, f.last_error
    FROM streaming_job_health(threshold) h
    JOIN imu_data_files f ON f.id = h.file_id
    JOIN users u ON u.id = f.user_id
    WHERE h.is_stuck
    ORDER BY h.since, f.id;
$$;

-- The seed's reset: requeue every stuck job (an outbox row carries its FileQueued event to
-- Kafka, committed with the new status, so the requeue is never lost), or fail it once
-- its attempt budget is spent. Rows a parser is writing right now are skipped (it is alive),
-- and each row is re-checked after locking, so a checkpoint that just landed wins.
CREATE FUNCTION reset_stuck_streaming_processes(threshold interval DEFAULT NULL)
RETURNS TABLE (file_id uuid, action text, attempts integer, reason text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    cfg_max integer := COALESCE((SELECT c.max_attempts FROM imuflow_config c), 5);
    cand record;
    f imu_data_files%ROWTYPE;
    why text;
    stamp text := to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
BEGIN
    FOR cand IN
        SELECT h.file_id, h.status, h.attempts, h.since, h.idle_seconds, h.limit_seconds
        FROM streaming_job_health(threshold) h
        WHERE h.is_stuck
        ORDER BY h.since
    LOOP
        SELECT * INTO f FROM imu_data_files WHERE id = cand.file_id FOR UPDATE SKIP LOCKED;
        IF NOT FOUND OR f.status <> cand.status OR f.attempts <> cand.attempts
           OR streaming_job_since(f.status, f.resume_checkpoint_at, f.claimed_at,
                                  f.processing_started_at, f.queued_at, f.updated_at) > cand.since THEN
            CONTINUE;
        END IF;
        why := CASE f.status
            WHEN 'parsing' THEN format('no checkpoint for %s s (limit %s s)',
                                       round(cand.idle_seconds::numeric), round(cand.limit_seconds::numeric))
            ELSE format('queued for %s s and never claimed (limit %s s; its event may have been lost)',
                        round(cand.idle_seconds::numeric), round(cand.limit_seconds::numeric))
        END;
        IF f.attempts - f.attempts_base >= cfg_max THEN
            why := format('stuck (%s) after %s of %s attempts; retry resumes from the last checkpoint',
                          why, f.attempts - f.attempts_base, cfg_max);
            UPDATE imu_data_files
            SET status = 'failed', error_message = why, last_error = why, completed_at = now(),
                updated_at = now(), eta_seconds = NULL, eta_low_seconds = NULL, eta_high_seconds = NULL
            WHERE id = f.id;
            file_id := f.id; action := 'failed'; attempts := f.attempts; reason := why;
        ELSE
            UPDATE imu_data_files
            SET status = 'queued', queued_at = now(), updated_at = now(), last_error = 'requeued: ' || why
            WHERE id = f.id;
            INSERT INTO outbox (topic, key, payload)
            VALUES ('files.v1', f.id::text, jsonb_build_object(
                'schema_version', 1, 'event_id', gen_random_uuid(), 'file_id', f.id,
                'user_id', f.user_id, 'type', 'file.queued', 'reason', 'requeue', 'run', f.run,
                'storage_uri', f.storage_uri, 'filename', f.filename, 'size_bytes', f.size_bytes,
                'format', f.format, 'sensor', f.sensor, 'timezone', f.timezone, 'queued_at', stamp));
            file_id := f.id; action := 'requeued'; attempts := f.attempts; reason := why;
        END IF;
        PERFORM record_file_event(f.id);
        RETURN NEXT;
    END LOOP;
END;
$$;

-- The seed's dashboard view: one row per file with its progress, timings and stuck flag.
CREATE VIEW streaming_processing_status AS
SELECT
    f.id AS file_id, f.user_id, u.name AS owner, f.filename, f.format, f.size_bytes, f.status,
    f.samples_processed, f.sample_count, f.sample_count_exact,
    CASE WHEN f.status = 'completed' THEN 100.0 ELSE f.percent END AS percent,
    f.samples_per_second, f.eta_seconds, f.batch_number, f.rows_skipped,
    f.attempts, f.attempts - f.attempts_base AS attempts_used, f.run,
    f.resume_samples, f.resume_batch_number, f.resume_checkpoint_at,
    f.created_at, f.queued_at, f.processing_started_at, f.claimed_at, f.last_checkpoint_at,
    f.completed_at,
    EXTRACT(EPOCH FROM (COALESCE(f.completed_at, now()) - f.processing_started_at))::double precision
        AS elapsed_seconds,
    h.idle_seconds AS seconds_since_checkpoint,
    h.limit_seconds AS stuck_limit_seconds,
    COALESCE(h.is_stuck, false) AS is_stuck,
    f.error_message, f.last_error
FROM imu_data_files f
JOIN users u ON u.id = f.user_id
LEFT JOIN streaming_job_health(NULL) h ON h.file_id = f.id;

-- The seed's performance view: one row per file (scope 'file', its current run) and one
-- overall row (scope 'overall'): throughput, batch-time percentiles, failure rates.
CREATE VIEW streaming_performance_metrics AS
WITH per_batch AS (
    SELECT l.file_id, l.samples_in_batch, l.batch_processing_time_ms, l.started_at, l.completed_at
    FROM streaming_processing_logs l
    JOIN imu_data_files f ON f.id = l.file_id AND f.run = l.run
),
file_rows AS (
    SELECT
        'file'::text AS scope, f.id AS file_id, f.filename, f.status,
        count(b.file_id) AS batches,
        COALESCE(sum(b.samples_in_batch), 0)::bigint AS samples,
        COALESCE(sum(b.batch_processing_time_ms), 0) / 1000.0 AS batch_seconds,
        sum(b.samples_in_batch) / NULLIF(sum(b.batch_processing_time_ms) / 1000.0, 0) AS samples_per_batch_second,
        sum(b.samples_in_batch)
            / NULLIF(EXTRACT(EPOCH FROM (max(b.completed_at) - min(b.started_at))), 0) AS samples_per_wall_second,
        percentile_cont(0.5) WITHIN GROUP (ORDER BY b.batch_processing_time_ms) AS batch_ms_p50,
        percentile_cont(0.95) WITHIN GROUP (ORDER BY b.batch_processing_time_ms) AS batch_ms_p95,
        percentile_cont(0.99) WITHIN GROUP (ORDER BY b.batch_processing_time_ms) AS batch_ms_p99,
        max(b.batch_processing_time_ms) AS batch_ms_max,
        1::bigint AS files,
        (f.status = 'completed')::int::bigint AS files_completed,
        (f.status = 'failed')::int::bigint AS files_failed,
        (f.attempts - f.attempts_base > 1)::int::bigint AS files_retried,
        CASE WHEN f.status IN ('completed', 'failed') THEN (f.status = 'failed')::int::double precision END
            AS failure_rate,
        max(b.completed_at) AS last_batch_at
    FROM imu_data_files f
    LEFT JOIN per_batch b ON b.file_id = f.id
    GROUP BY f.id
),
overall AS (
    SELECT
        'overall'::text AS scope, NULL::uuid AS file_id, NULL::text AS filename, NULL::text AS status,
        count(*) AS batches,
        COALESCE(sum(b.samples_in_batch), 0)::bigint AS samples,
        COALESCE(sum(b.batch_processing_time_ms), 0) / 1000.0 AS batch_seconds,
        sum(b.samples_in_batch) / NULLIF(sum(b.batch_processing_time_ms) / 1000.0, 0) AS samples_per_batch_second,
        sum(b.samples_in_batch) / NULLIF(EXTRACT(EPOCH FROM (max(b.completed_at) - min(b.started_at))), 0)
            AS samples_per_wall_second,
        percentile_cont(0.5) WITHIN GROUP (ORDER BY b.batch_processing_time_ms) AS batch_ms_p50,
        percentile_cont(0.95) WITHIN GROUP (ORDER BY b.batch_processing_time_ms) AS batch_ms_p95,
        percentile_cont(0.99) WITHIN GROUP (ORDER BY b.batch_processing_time_ms) AS batch_ms_p99,
        max(b.batch_processing_time_ms) AS batch_ms_max,
        (SELECT count(*) FROM imu_data_files) AS files,
        (SELECT count(*) FROM imu_data_files WHERE status = 'completed') AS files_completed,
        (SELECT count(*) FROM imu_data_files WHERE status = 'failed') AS files_failed,
        (SELECT count(*) FROM imu_data_files WHERE attempts - attempts_base > 1) AS files_retried,
        (SELECT count(*) FILTER (WHERE status = 'failed')::double precision
                / NULLIF(count(*) FILTER (WHERE status IN ('completed', 'failed')), 0)
         FROM imu_data_files) AS failure_rate,
        max(b.completed_at) AS last_batch_at
    FROM per_batch b
)
SELECT * FROM overall
UNION ALL
SELECT * FROM file_rows;
