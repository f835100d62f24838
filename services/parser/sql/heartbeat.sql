-- The parser's heartbeat row (services/parser/heartbeat.py): the operator page's live parsers.

-- name: beat
-- $1 parser_id, $2 hostname, $3 pid, $4 started_at, $5 interval_seconds, $6 concurrency,
-- $7 jobs_in_flight, $8 samples_parsed, $9 consumer_lag (NULL = not measured yet)
INSERT INTO parser_heartbeats
    (parser_id, hostname, pid, started_at, seen_at, interval_seconds, concurrency, jobs_in_flight,
     samples_parsed, consumer_lag)
VALUES ($1, $2, $3, $4, now(), $5, $6, $7, $8, $9)
ON CONFLICT (parser_id) DO UPDATE
SET seen_at = now(), interval_seconds = EXCLUDED.interval_seconds, concurrency = EXCLUDED.concurrency,
    jobs_in_flight = EXCLUDED.jobs_in_flight, samples_parsed = EXCLUDED.samples_parsed,
    consumer_lag = EXCLUDED.consumer_lag;

-- name: prune
-- Rows of parsers gone for a day (a killed parser cannot delete its own row).
DELETE FROM parser_heartbeats WHERE seen_at < now() - interval '1 day';

-- name: leave
-- $1 parser_id. A clean stop removes the row at once.
DELETE FROM parser_heartbeats WHERE parser_id = $1;
