-- 0017: one builder per event. The SQL that requeues a job no longer writes the FileQueued
-- contract JSON itself (it had to be kept in step with contracts/events.py by hand): it
-- writes a stub, `{"build": "file.queued", "reason": ...}`, and the outbox relay
-- (imuflow/outbox.py) builds the event from the file's row with FileQueued.of_file before
-- it sends it, and stores what it sent in the row.

-- The payload of an outbox row the relay turns into a FileQueued event of its key's file.
CREATE OR REPLACE FUNCTION imuflow_file_queued_stub(reason text) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('build', 'file.queued', 'reason', reason)
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
            -- A stub: the relay builds the FileQueued event from the row (one builder).
            INSERT INTO outbox (topic, key, payload)
            VALUES ('files.v1', f.id::text, imuflow_file_queued_stub('requeue'));
            file_id := f.id; action := 'requeued'; attempts := f.attempts; reason := why;
        END IF;
        PERFORM record_file_event(f.id);
        RETURN NEXT;
    END LOOP;
END;
$$;
