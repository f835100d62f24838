-- imuflow schema, version 12: what operators watch beyond the stuck rule (SPEC §7).
--
-- * parser_heartbeats: each parser process upserts its row every few seconds, so the
--   operator page lists the live parsers from Postgres (not from broker admin calls).
-- * failure_reason(): the reason class of a failed file, from its error message.
-- * streaming_trends(): throughput, files completed and failed by reason, queue wait and
--   parse time per hour or day; the views streaming_trends_hourly/_daily cover 30 days.
-- * get_slowing_streaming_processes(): the early warning, a parsing job whose batch rate
--   stayed below a third of its own median for 5 batches in a row.

CREATE TABLE parser_heartbeats (
    parser_id         text PRIMARY KEY,          -- host:pid:random, new for every process
    hostname          text NOT NULL,
    pid               integer NOT NULL,
    started_at        timestamptz NOT NULL,
    seen_at           timestamptz NOT NULL DEFAULT now(),
    interval_seconds  double precision NOT NULL CHECK (interval_seconds > 0),
    concurrency       integer NOT NULL,
    jobs_in_flight    integer NOT NULL DEFAULT 0,
    samples_parsed    bigint NOT NULL DEFAULT 0,  -- since the process started
    consumer_lag      bigint                      -- the parser group's lag as this parser last measured it
);

-- Trends read batches and finished files by time.
CREATE INDEX IF NOT EXISTS streaming_processing_logs_completed_idx ON streaming_processing_logs (completed_at);
CREATE INDEX IF NOT EXISTS imu_data_files_completed_idx ON imu_data_files (completed_at)
    WHERE completed_at IS NOT NULL;

-- The reason class of a failure, matching imuflow_parse_failures_total{reason}: the parser
-- writes "gave up after N attempts; ..." when retries are spent, the watchdog "stuck (...)";
-- everything else a parser fails at once is the file itself ("format").
CREATE FUNCTION failure_reason(error_message text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN error_message IS NULL THEN 'unknown'
        WHEN error_message LIKE 'stuck (%' THEN 'stuck'
        WHEN error_message LIKE 'gave up after %' THEN 'attempts'
        WHEN error_message ILIKE '%dead letter%' OR error_message ILIKE '%dead-letter%' THEN 'dead_letter'
        ELSE 'format'
    END;
$$;

-- One row per finished file (a ZIP counts through its streams, not itself): when it
-- finished, how, why, how long it waited for a parser and how long the parse took.
CREATE VIEW streaming_job_outcomes AS
SELECT f.id AS file_id, f.user_id, f.filename, f.status, f.completed_at AS finished_at,
       CASE WHEN f.status = 'failed' THEN failure_reason(f.error_message) END AS reason,
       GREATEST(EXTRACT(EPOCH FROM (f.processing_started_at - f.created_at)), 0)::double precision
           AS queue_wait_seconds,
       GREATEST(EXTRACT(EPOCH FROM (f.completed_at - f.processing_started_at)), 0)::double precision
           AS parse_seconds,
       f.sample_count, f.samples_processed, f.error_message
FROM imu_data_files f
WHERE f.status IN ('completed', 'failed') AND f.completed_at IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM imu_data_files c WHERE c.parent_id = f.id);

-- Trends per `bucket` ('hour' or 'day') over the last `days` days, every bucket present
-- (empty ones with zeros) so that charts show gaps. samples_per_second is the bucket's
-- average (the current bucket: over its elapsed part); samples_per_busy_second divides by
-- the batches' own processing time. Queue wait and parse time are of the files that
-- finished in the bucket (parse time: completed files only).
CREATE FUNCTION streaming_trends(bucket text, days integer)
RETURNS TABLE (
    bucket_start timestamptz, bucket_seconds double precision, batches bigint, samples bigint,
    samples_per_second double precision, samples_per_busy_second double precision,
    files_completed bigint, files_failed bigint, failed_by_reason jsonb,
    queue_wait_p50_seconds double precision, queue_wait_p95_seconds double precision,
    parse_p50_seconds double precision, parse_p95_seconds double precision
)
LANGUAGE sql STABLE AS $$
    WITH w AS (
        SELECT date_trunc(bucket, now() - make_interval(days => days)) AS first_bucket,
               CASE bucket WHEN 'hour' THEN interval '1 hour' ELSE interval '1 day' END AS step
    ),
    buckets AS (
        SELECT generate_series(w.first_bucket, date_trunc(bucket, now()), w.step) AS b, w.step FROM w
    ),
    per_batch AS (
        SELECT date_trunc(bucket, l.completed_at) AS b, count(*) AS batches,
               sum(l.samples_in_batch)::bigint AS samples,
               sum(l.batch_processing_time_ms) / 1000.0 AS busy_seconds
        FROM streaming_processing_logs l
        -- The expression, not w.first_bucket: a stable value the index scan can use.
        WHERE l.completed_at >= date_trunc(bucket, now() - make_interval(days => days))
        GROUP BY 1
    ),
    per_file AS (
        SELECT date_trunc(bucket, o.finished_at) AS b,
               count(*) FILTER (WHERE o.status = 'completed') AS files_completed,
               count(*) FILTER (WHERE o.status = 'failed') AS files_failed,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY o.queue_wait_seconds) AS qw50,
               percentile_cont(0.95) WITHIN GROUP (ORDER BY o.queue_wait_seconds) AS qw95,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY o.parse_seconds)
                   FILTER (WHERE o.status = 'completed') AS p50,
               percentile_cont(0.95) WITHIN GROUP (ORDER BY o.parse_seconds)
                   FILTER (WHERE o.status = 'completed') AS p95
        FROM streaming_job_outcomes o
        WHERE o.finished_at >= date_trunc(bucket, now() - make_interval(days => days))
        GROUP BY 1
    ),
    per_reason AS (
        SELECT x.b, jsonb_object_agg(x.reason, x.n) AS by_reason
        FROM (
            SELECT date_trunc(bucket, o.finished_at) AS b, o.reason, count(*) AS n
            FROM streaming_job_outcomes o
            WHERE o.status = 'failed'
              AND o.finished_at >= date_trunc(bucket, now() - make_interval(days => days))
            GROUP BY 1, 2
        ) x
        GROUP BY x.b
    )
    SELECT k.b,
           EXTRACT(EPOCH FROM k.step)::double precision,
           COALESCE(pb.batches, 0), COALESCE(pb.samples, 0),
           COALESCE(pb.samples, 0)
               / GREATEST(EXTRACT(EPOCH FROM LEAST(k.step, now() - k.b)), 1)::double precision,
           pb.samples / NULLIF(pb.busy_seconds, 0)::double precision,
           COALESCE(pf.files_completed, 0), COALESCE(pf.files_failed, 0),
           COALESCE(pr.by_reason, '{}'::jsonb),
           pf.qw50, pf.qw95, pf.p50, pf.p95
    FROM buckets k
    LEFT JOIN per_batch pb ON pb.b = k.b
    LEFT JOIN per_file pf ON pf.b = k.b
    LEFT JOIN per_reason pr ON pr.b = k.b
    ORDER BY k.b;
$$;

CREATE VIEW streaming_trends_hourly AS SELECT * FROM streaming_trends('hour', 30);
CREATE VIEW streaming_trends_daily AS SELECT * FROM streaming_trends('day', 30);

-- The early warning. A batch's rate is its samples over its interval (the gap since the
-- previous batch of the same attempt, at least its own processing time, as in the stuck
-- rule). A parsing job is slowing when each of its last `window_batches` batches of the
-- current run ran below 1/`factor` of its median rate over the (up to 100) batches before
-- them, of which there must be at least `window_batches`. Such a job still checkpoints,
-- so the stuck rule has not fired; this says it is heading there.
CREATE FUNCTION get_slowing_streaming_processes(window_batches integer DEFAULT 5, factor double precision DEFAULT 3)
RETURNS TABLE (
    file_id uuid, user_id uuid, owner text, filename text, attempts integer, batch_number integer,
    samples_processed bigint, median_rate double precision, recent_rate double precision,
    slow_batches integer, slowing_since timestamptz
)
LANGUAGE sql STABLE AS $$
    WITH jobs AS (
        SELECT f.id, f.user_id, f.filename, f.attempts, f.run, f.samples_processed
        FROM imu_data_files f
        WHERE f.status = 'parsing'
    ),
    rated AS (
        SELECT j.id, l.batch_number, l.completed_at, l.samples_in_batch,
               l.samples_in_batch / NULLIF(GREATEST(
                   l.batch_processing_time_ms / 1000.0,
                   EXTRACT(EPOCH FROM l.completed_at - lag(l.completed_at)
                       OVER (PARTITION BY j.id, l.attempt ORDER BY l.batch_number))
               ), 0)::double precision AS rate,
               row_number() OVER (PARTITION BY j.id ORDER BY l.batch_number DESC) AS recency
        FROM jobs j
        CROSS JOIN LATERAL (
            SELECT * FROM streaming_processing_logs s
            WHERE s.file_id = j.id AND s.run = j.run
            ORDER BY s.batch_number DESC
            LIMIT 100 + window_batches
        ) l
    ),
    judged AS (
        SELECT r.id,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY r.rate) FILTER (WHERE r.recency > window_batches)
                   AS median_rate,
               count(r.rate) FILTER (WHERE r.recency > window_batches) AS reference,
               count(r.rate) FILTER (WHERE r.recency <= window_batches) AS recent,
               max(r.rate) FILTER (WHERE r.recency <= window_batches) AS fastest_recent,
               min(r.completed_at) FILTER (WHERE r.recency <= window_batches) AS window_start,
               max(r.batch_number) AS batch_number
        FROM rated r
        GROUP BY r.id
    )
    SELECT j.id, j.user_id, u.name, j.filename, j.attempts, g.batch_number, j.samples_processed,
           g.median_rate,
           (SELECT avg(r.rate) FROM rated r WHERE r.id = j.id AND r.recency <= window_batches),
           window_batches, g.window_start
    FROM judged g
    JOIN jobs j ON j.id = g.id
    JOIN users u ON u.id = j.user_id
    WHERE g.reference >= window_batches AND g.recent = window_batches
      AND g.fastest_recent < g.median_rate / factor
    ORDER BY g.window_start, j.id;
$$;
