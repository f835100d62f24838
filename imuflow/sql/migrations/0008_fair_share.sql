-- imuflow schema, version 8: fair share between users, a fencing token apart from the
-- attempt count, and a reset that ends a backend holding a stuck job's row lock.
--
-- * `lease` is the fencing token: every claim takes a new one and every write of a parser
--   requires its own. `attempts` stays what users and MAX_ATTEMPTS count (deliveries):
--   a job that yielded its parser to other users' work (fair share, SPEC §7) is resumed
--   by a claim that takes a new lease but no attempt (`yielded_at` marks that).
-- * reset_stuck_streaming_processes: a stuck job whose row is locked by a backend whose
--   transaction is older than the hold timeout (2 x STUCK_AFTER, at least 10 s: what the
--   parser's own batch transactions are bounded by) has that backend terminated, then is
--   reset as usual. Before, SKIP LOCKED skipped such a row for ever (an operator's
--   forgotten `SELECT ... FOR UPDATE`, a client that set no timeouts).

ALTER TABLE imu_data_files
    ADD COLUMN IF NOT EXISTS lease bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS yielded_at timestamptz,
    -- How often the job was deferred unclaimed since its last claim (fair share): bounded,
    -- so work that waits out of reach (its event lost) cannot starve it.
    ADD COLUMN IF NOT EXISTS deferrals integer NOT NULL DEFAULT 0;
UPDATE imu_data_files SET lease = attempts WHERE lease < attempts;

-- The backend (if any) whose transaction holds the row lock of file `file_uuid`, with how
-- long its transaction has been open. The row's xmax names the locking transaction; its
-- granted transactionid lock names the backend, which must also hold a row-level table
-- lock on imu_data_files (a lock shared by several transactions has a multixact as xmax,
-- a number that could equal an unrelated xid: that backend would hold no such lock).
CREATE OR REPLACE FUNCTION imuflow_row_lock_holder(file_uuid uuid)
RETURNS TABLE (pid integer, held_seconds double precision)
LANGUAGE sql STABLE AS $$
    SELECT a.pid, EXTRACT(EPOCH FROM (now() - a.xact_start))::double precision
    FROM imu_data_files f
    JOIN pg_locks l ON l.locktype = 'transactionid' AND l.transactionid = f.xmax
                    AND l.mode = 'ExclusiveLock' AND l.granted
    JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE f.id = file_uuid AND a.pid <> pg_backend_pid()
      AND EXISTS (
          SELECT 1 FROM pg_locks t
          WHERE t.pid = l.pid AND t.locktype = 'relation' AND t.granted
            AND t.relation = 'imu_data_files'::regclass
            AND t.mode IN ('RowShareLock', 'RowExclusiveLock')
      );
$$;

CREATE OR REPLACE FUNCTION reset_stuck_streaming_processes(threshold interval DEFAULT NULL)
RETURNS TABLE (file_id uuid, action text, attempts integer, reason text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    cfg_max integer := COALESCE((SELECT c.max_attempts FROM imuflow_config c), 5);
    hold_s double precision := GREATEST(
        2 * EXTRACT(EPOCH FROM COALESCE((SELECT c.stuck_after FROM imuflow_config c), interval '300 seconds')),
        10);
    cand record;
    holder record;
    f imu_data_files%ROWTYPE;
    why text;
    ended text;
    stamp text := to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
BEGIN
    FOR cand IN
        SELECT h.file_id, h.status, h.attempts, h.since, h.idle_seconds, h.limit_seconds
        FROM streaming_job_health(threshold) h
        WHERE h.is_stuck
        ORDER BY h.since
    LOOP
        ended := NULL;
        SELECT * INTO f FROM imu_data_files WHERE id = cand.file_id FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            -- Locked. A parser writing a batch right now is alive: skip it. A transaction
            -- that has held the lock beyond the hold timeout is not: end its backend.
            SELECT * INTO holder FROM imuflow_row_lock_holder(cand.file_id) LIMIT 1;
            IF NOT FOUND OR holder.held_seconds <= hold_s THEN
                CONTINUE;
            END IF;
            BEGIN
                PERFORM pg_terminate_backend(holder.pid, 5000);
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE WARNING 'cannot end backend % holding the row of stuck job %: %',
                    holder.pid, cand.file_id, SQLERRM;
                CONTINUE;
            END;
            ended := format('ended backend %s, which held the job''s row lock for %s s',
                            holder.pid, round(holder.held_seconds::numeric));
            SELECT * INTO f FROM imu_data_files WHERE id = cand.file_id FOR UPDATE SKIP LOCKED;
            IF NOT FOUND THEN
                CONTINUE;
            END IF;
        END IF;
        IF f.status <> cand.status OR f.attempts <> cand.attempts
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
        IF ended IS NOT NULL THEN
            why := why || '; ' || ended;
        END IF;
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

-- Fair share (SPEC §7). Users in fair order: fewer running jobs first, then the one served
-- least recently (never served first), then by id. `waiting`: the user has a queued job
-- (a ZIP's parent is 'queued' while its children run, but is never parsed: not work).
CREATE OR REPLACE FUNCTION imuflow_fair_order()
RETURNS TABLE (user_id uuid, running bigint, waiting boolean, served timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT f.user_id,
           count(*) FILTER (WHERE f.status = 'parsing'),
           bool_or(f.status = 'queued' AND f.format IS DISTINCT FROM 'zip'),
           COALESCE(max(f.claimed_at), '-infinity'::timestamptz)
    FROM imu_data_files f
    WHERE f.status IN ('queued', 'parsing')
    GROUP BY f.user_id;
$$;
