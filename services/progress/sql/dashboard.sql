-- Queries of the operator dashboard (services/progress/dashboard.py), over migration 0012.

-- name: parsers
-- Parsers seen in the last day, live ones first (live: a heartbeat within three intervals).
SELECT parser_id, hostname, pid, started_at, seen_at,
       EXTRACT(EPOCH FROM (now() - seen_at))::double precision AS seen_seconds_ago,
       seen_at > now() - make_interval(secs => 3 * interval_seconds) AS live,
       concurrency, jobs_in_flight, samples_parsed, consumer_lag
FROM parser_heartbeats
WHERE seen_at > now() - interval '1 day'
ORDER BY live DESC, started_at, parser_id;

-- name: trends
-- $1 bucket ('hour' or 'day'), $2 days. The function behind the streaming_trends_hourly and
-- _daily views (30 days), called with the period asked for so a week reads only a week.
SELECT * FROM streaming_trends($1, $2);

-- name: failures
-- $1 hours, $2 limit. Files that ended failed in the last $1 hours, newest first.
SELECT o.file_id, o.filename, u.name AS owner, o.reason, o.error_message,
       f.attempts - f.attempts_base AS attempts, o.finished_at
FROM streaming_job_outcomes o
JOIN imu_data_files f ON f.id = o.file_id
JOIN users u ON u.id = o.user_id
WHERE o.status = 'failed' AND o.finished_at > now() - make_interval(hours => $1)
ORDER BY o.finished_at DESC, o.file_id
LIMIT $2;
