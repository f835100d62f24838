-- imuflow schema, version 3: multi-file uploads (a phone app's ZIP export).
--
-- A ZIP upload is one parent row (parent_id NULL, format 'zip') that is never parsed
-- itself, and one child row per sensor stream, each parsed as its own job. The parent's
-- displayed record is derived from its children by the triggers below:
--   * status 'queued' while any child has not ended, then 'completed' once every child
--     has ended (completed, failed or cancelled); a child's failure or cancellation is
--     named in the parent's warnings ("Gyroscope.csv: failed: ..."), and each child keeps
--     its own status. The parent is never 'parsing', so stuck detection and retry (which
--     act on single jobs) never touch it.
--   * samples_processed = sum over children; sample_count = that sum once every child
--     ended (exact), else the sum of the children's estimates when all have one;
--     percent = the children's percents weighted by their sizes.
-- Lock order, to stay free of deadlocks: child rows, then the event-log advisory lock,
-- then the parent row (record_file_event takes the same advisory lock).

CREATE FUNCTION refresh_archive_record(parent uuid) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    agg record;
BEGIN
    SELECT count(*) AS n,
           count(*) FILTER (WHERE status IN ('completed', 'failed', 'cancelled')) AS ended,
           COALESCE(sum(samples_processed), 0) AS done,
           CASE WHEN count(sample_count) = count(*) THEN sum(sample_count) END AS estimate,
           COALESCE(sum(size_bytes * CASE WHEN status IN ('completed', 'failed', 'cancelled')
                                         THEN 100 ELSE percent END)
                    / NULLIF(sum(size_bytes), 0), 0) AS pct,
           sum(samples_per_second) FILTER (WHERE status = 'parsing') AS rate,
           max(eta_seconds) FILTER (WHERE status NOT IN ('completed', 'failed', 'cancelled')) AS eta,
           max(eta_low_seconds) FILTER (WHERE status NOT IN ('completed', 'failed', 'cancelled')) AS eta_low,
           max(eta_high_seconds) FILTER (WHERE status NOT IN ('completed', 'failed', 'cancelled')) AS eta_high,
           COALESCE(sum(rows_skipped), 0) AS skipped,
           COALESCE(sum(batch_number), 0) AS batches,
           min(processing_started_at) AS started,
           max(last_checkpoint_at) AS checkpoint,
           max(completed_at) AS finished,
           COALESCE(jsonb_agg(filename || ': ' || CASE status
                        WHEN 'failed' THEN 'failed: ' || COALESCE(error_message, 'unknown error')
                        ELSE 'cancelled' END ORDER BY created_at, id)
                    FILTER (WHERE status IN ('failed', 'cancelled')), '[]'::jsonb) AS notes
    INTO agg
    FROM imu_data_files WHERE parent_id = parent;
    IF agg.n = 0 THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(8151623);
    UPDATE imu_data_files p
    SET status = CASE WHEN agg.ended = agg.n THEN 'completed' ELSE 'queued' END,
        samples_processed = agg.done,
        sample_count = CASE WHEN agg.ended = agg.n THEN agg.done ELSE agg.estimate END,
        sample_count_exact = (agg.ended = agg.n),
        percent = LEAST(100, agg.pct),
        samples_per_second = agg.rate,
        eta_seconds = CASE WHEN agg.ended = agg.n THEN 0 ELSE agg.eta END,
        eta_low_seconds = CASE WHEN agg.ended = agg.n THEN 0 ELSE agg.eta_low END,
        eta_high_seconds = CASE WHEN agg.ended = agg.n THEN 0 ELSE agg.eta_high END,
        rows_skipped = agg.skipped,
        batch_number = agg.batches,
        processing_started_at = agg.started,
        last_checkpoint_at = agg.checkpoint,
        completed_at = CASE WHEN agg.ended = agg.n THEN agg.finished END,
        -- keep the ingest's notes about skipped members, replace the children's outcomes
        warnings = COALESCE((SELECT jsonb_agg(w) FROM jsonb_array_elements(p.warnings) w
                             WHERE left(w #>> '{}', 8) = 'skipped '), '[]'::jsonb) || agg.notes,
        updated_at = now()
    WHERE p.id = parent;
    IF FOUND THEN
        PERFORM record_file_event(parent);
    END IF;
END;
$$;

CREATE FUNCTION archive_child_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM refresh_archive_record(OLD.parent_id);
    ELSE
        PERFORM refresh_archive_record(NEW.parent_id);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER archive_child_inserted AFTER INSERT ON imu_data_files
    FOR EACH ROW WHEN (NEW.parent_id IS NOT NULL)
    EXECUTE FUNCTION archive_child_changed();
CREATE TRIGGER archive_child_updated
    AFTER UPDATE OF status, samples_processed, sample_count, percent ON imu_data_files
    FOR EACH ROW WHEN (NEW.parent_id IS NOT NULL AND (
        OLD.status IS DISTINCT FROM NEW.status
        OR OLD.samples_processed IS DISTINCT FROM NEW.samples_processed
        OR OLD.sample_count IS DISTINCT FROM NEW.sample_count
        OR OLD.percent IS DISTINCT FROM NEW.percent))
    EXECUTE FUNCTION archive_child_changed();
CREATE TRIGGER archive_child_deleted AFTER DELETE ON imu_data_files
    FOR EACH ROW WHEN (OLD.parent_id IS NOT NULL)
    EXECUTE FUNCTION archive_child_changed();

-- Cancelling a ZIP's record cancels its unfinished children (the parent then ends as
-- 'completed', naming the cancelled streams in its warnings).
CREATE FUNCTION archive_cancelled() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    child uuid;
BEGIN
    FOR child IN
        UPDATE imu_data_files
        SET status = 'cancelled', completed_at = now(), updated_at = now(),
            eta_seconds = NULL, eta_low_seconds = NULL, eta_high_seconds = NULL
        WHERE parent_id = NEW.id AND status IN ('uploaded', 'queued', 'parsing')
        RETURNING id
    LOOP
        PERFORM record_file_event(child);
    END LOOP;
    RETURN NULL;
END;
$$;

CREATE TRIGGER archive_cancelled AFTER UPDATE OF status ON imu_data_files
    FOR EACH ROW WHEN (NEW.parent_id IS NULL AND NEW.status = 'cancelled'
                       AND OLD.status IS DISTINCT FROM 'cancelled')
    EXECUTE FUNCTION archive_cancelled();
