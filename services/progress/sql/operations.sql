-- Queries of the operator side of the progress service (services/progress/operations.py).

-- name: write_config
-- $1 stuck_after (seconds), $2 max_attempts. What the SQL stuck rule reads.
INSERT INTO imuflow_config (singleton, stuck_after, max_attempts, updated_at)
VALUES (true, make_interval(secs => $1), $2, now())
ON CONFLICT (singleton) DO UPDATE
SET stuck_after = EXCLUDED.stuck_after, max_attempts = EXCLUDED.max_attempts, updated_at = now();

-- name: try_watchdog_lock
-- $1 lock key. Only one replica acts per round; released at the end of the transaction.
SELECT pg_try_advisory_xact_lock($1);

-- name: reset_stuck
-- $1 threshold in seconds (NULL = the configured stuck rule). With filename and owner for alerts.
SELECT r.file_id, r.action, r.attempts, r.reason, f.filename, u.name AS owner
FROM reset_stuck_streaming_processes(make_interval(secs => $1::double precision)) r
LEFT JOIN imu_data_files f ON f.id = r.file_id
LEFT JOIN users u ON u.id = f.user_id;

-- name: stuck
-- $1 threshold in seconds (NULL = the configured stuck rule)
SELECT * FROM get_stuck_streaming_processes(make_interval(secs => $1::double precision));

-- name: count_stuck
SELECT count(*) FROM get_stuck_streaming_processes(NULL);

-- name: slowing
-- The early warning: parsing jobs slowing down (5 batches below a third of their median).
SELECT * FROM get_slowing_streaming_processes();

-- name: list_jobs
-- $1 status (NULL = every status), $2 limit. Every user's files, newest first.
SELECT r.*, s.owner, s.user_id AS owner_id, s.attempts_used, s.is_stuck,
       s.seconds_since_checkpoint, s.stuck_limit_seconds, s.last_error,
       (w.file_id IS NOT NULL) AS is_slowing
FROM file_records r
JOIN streaming_processing_status s ON s.file_id = r.id
LEFT JOIN get_slowing_streaming_processes() w ON w.file_id = r.id
WHERE ($1::text IS NULL OR r.status = $1)
ORDER BY r.created_at DESC, r.id DESC
LIMIT $2;

-- name: count_by_status
SELECT status, count(*) AS files FROM imu_data_files GROUP BY status;

-- name: performance
-- $1 how many file rows (newest batch first)
(SELECT * FROM streaming_performance_metrics WHERE scope = 'overall')
UNION ALL
(SELECT * FROM streaming_performance_metrics WHERE scope = 'file' AND batches > 0
 ORDER BY last_batch_at DESC NULLS LAST
 LIMIT $1);

-- name: init_alert_cursor
-- A first start notifies only failures from now on, not the whole history.
INSERT INTO ops_cursors (name, last_id)
VALUES ('alerts', (SELECT COALESCE(max(id), 0) FROM file_events))
ON CONFLICT (name) DO NOTHING;

-- name: alert_cursor
SELECT last_id FROM ops_cursors WHERE name = 'alerts';

-- name: failed_between
-- $1 after id, $2 up to id, $3 limit. Failed events in (after, upto], oldest first.
SELECT e.id, e.file_id, e.data, u.name AS owner
FROM file_events e
LEFT JOIN users u ON u.id = e.user_id
WHERE e.id > $1 AND e.id <= $2 AND e.event_type = 'failed'
ORDER BY e.id
LIMIT $3;

-- name: max_event_id
SELECT COALESCE(max(id), 0) FROM file_events;

-- name: advance_alert_cursor
-- $1 new last id (never moves back)
UPDATE ops_cursors SET last_id = GREATEST(last_id, $1) WHERE name = 'alerts';
