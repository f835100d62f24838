-- imuflow schema, version 1. Table and function names are the seed's (SPEC §4), so its
-- users' queries keep working. Applied once, in a transaction, by `imuflow migrate`.

CREATE TABLE users (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL UNIQUE,
    is_admin    boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Tokens are random 32-byte secrets; only their sha256 is stored.
CREATE TABLE api_tokens (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash  bytea NOT NULL UNIQUE,
    kind        text NOT NULL DEFAULT 'api' CHECK (kind IN ('api', 'session')),
    label       text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    revoked_at  timestamptz,
    last_used_at timestamptz
);
CREATE INDEX api_tokens_user_idx ON api_tokens (user_id);

CREATE TABLE imu_data_files (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id               uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    parent_id             uuid REFERENCES imu_data_files(id) ON DELETE CASCADE,
    filename              text NOT NULL,
    size_bytes            bigint NOT NULL,
    sha256                text NOT NULL,
    format                text,               -- requested (NULL = detect), then detected
    sensor                text,               -- the upload's override, if any
    timezone              text NOT NULL DEFAULT 'UTC',
    storage_uri           text NOT NULL,
    status                text NOT NULL DEFAULT 'uploaded'
        CHECK (status IN ('uploaded', 'queued', 'parsing', 'completed', 'failed', 'cancelled')),
    duplicate_of          uuid REFERENCES imu_data_files(id) ON DELETE SET NULL,
    -- Delivery bookkeeping (owned by the parser): every delivery increments `attempts`.
    attempts              integer NOT NULL DEFAULT 0,
    -- A user's retry starts a fresh budget without reusing attempt numbers, which
    -- double as fencing tokens: the budget is attempts - attempts_base.
    attempts_base         integer NOT NULL DEFAULT 0,
    -- Resume checkpoint (owned by the parser, committed with each batch's samples).
    resume_offset         bigint NOT NULL DEFAULT 0,
    resume_samples        bigint NOT NULL DEFAULT 0,
    resume_batch_number   integer NOT NULL DEFAULT 0,
    resume_state          jsonb NOT NULL DEFAULT '{}',
    resume_checkpoint_at  timestamptz,
    claimed_at            timestamptz,        -- when the current attempt took the job
    last_error            text,               -- the last transient error, for operators
    run                   integer NOT NULL DEFAULT 1,  -- bumped by a re-parse from scratch
    -- Displayed progress (owned by the progress service, applied from events).
    samples_processed     bigint NOT NULL DEFAULT 0,
    sample_count          bigint,
    sample_count_exact    boolean NOT NULL DEFAULT false,
    bytes_processed       bigint NOT NULL DEFAULT 0,
    percent               double precision NOT NULL DEFAULT 0,
    samples_per_second    double precision,
    eta_seconds           double precision,
    eta_low_seconds       double precision,
    eta_high_seconds      double precision,
    eta_state             jsonb NOT NULL DEFAULT '{}',
    batch_number          integer NOT NULL DEFAULT 0,
    rows_skipped          bigint NOT NULL DEFAULT 0,
    warnings              jsonb NOT NULL DEFAULT '[]',
    units                 jsonb NOT NULL DEFAULT '{}',
    error_message         text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    queued_at             timestamptz,
    processing_started_at timestamptz,
    last_checkpoint_at    timestamptz,
    completed_at          timestamptz,
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX imu_data_files_user_created_idx ON imu_data_files (user_id, created_at DESC, id DESC);
CREATE INDEX imu_data_files_status_idx ON imu_data_files (status) WHERE status IN ('queued', 'parsing');
CREATE INDEX imu_data_files_sha_idx ON imu_data_files (user_id, sha256);
CREATE INDEX imu_data_files_parent_idx ON imu_data_files (parent_id) WHERE parent_id IS NOT NULL;

CREATE TABLE streaming_processing_logs (
    id                        bigserial PRIMARY KEY,
    file_id                   uuid NOT NULL REFERENCES imu_data_files(id) ON DELETE CASCADE,
    user_id                   uuid NOT NULL,
    run                       integer NOT NULL DEFAULT 1,
    batch_number              integer NOT NULL,
    samples_in_batch          integer NOT NULL,
    total_samples_processed   bigint NOT NULL,
    batch_processing_time_ms  double precision NOT NULL,
    started_at                timestamptz NOT NULL,
    completed_at              timestamptz NOT NULL,
    attempt                   integer NOT NULL,
    UNIQUE (file_id, run, batch_number)
);

-- Samples: no primary key. Exactly-once storage comes from committing each batch with
-- the resume checkpoint in one transaction; the index serves export order and delete.
CREATE TABLE imu_samples (
    file_id       uuid NOT NULL,
    sample_index  bigint NOT NULL,
    t_ns          bigint,
    ax real, ay real, az real,
    gx real, gy real, gz real,
    mx real, my real, mz real,
    sensor        text
);
CREATE INDEX imu_samples_file_idx ON imu_samples (file_id, sample_index);

-- Transactional outbox: rows written in the same transaction as the state they announce;
-- a relay publishes them to Kafka and marks them published (at-least-once).
CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    topic         text NOT NULL,
    key           text NOT NULL,
    payload       jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX outbox_pending_idx ON outbox (id) WHERE published_at IS NULL;

-- Every change of a file's displayed state, in commit order: the SSE event log that
-- reconnecting browsers are replayed from (Last-Event-ID = id).
CREATE TABLE file_events (
    id          bigserial PRIMARY KEY,
    file_id     uuid NOT NULL,
    user_id     uuid NOT NULL,
    event_type  text NOT NULL CHECK (event_type IN ('progress', 'completed', 'failed', 'cancelled')),
    data        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX file_events_user_idx ON file_events (user_id, id);
CREATE INDEX file_events_file_idx ON file_events (file_id, id);

-- The file record of SPEC §4, exactly as the API and SSE show it.
CREATE VIEW file_records AS
SELECT
    f.id, f.user_id, f.filename, f.size_bytes, f.sha256, f.format, f.status,
    f.samples_processed, f.sample_count, f.sample_count_exact, f.duplicate_of,
    COALESCE((SELECT array_agg(c.id ORDER BY c.created_at, c.id)
              FROM imu_data_files c WHERE c.parent_id = f.id), '{}') AS children,
    f.parent_id,
    CASE WHEN f.status = 'completed' THEN 100.0 ELSE f.percent END AS percent,
    f.samples_per_second, f.eta_seconds, f.eta_low_seconds, f.eta_high_seconds,
    f.batch_number, f.rows_skipped, f.warnings, f.units, f.error_message, f.attempts, f.run,
    f.created_at, f.processing_started_at, f.last_checkpoint_at, f.completed_at
FROM imu_data_files f;

-- Append the file's current record to the event log and wake every SSE multiplexer.
-- An advisory lock serialises writers so ids become visible in order (no replay gaps).
CREATE FUNCTION record_file_event(file_uuid uuid, kind text DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    rec  record;
    etype text;
    new_id bigint;
BEGIN
    SELECT * INTO rec FROM file_records WHERE id = file_uuid;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    etype := COALESCE(kind, CASE rec.status
        WHEN 'completed' THEN 'completed'
        WHEN 'failed' THEN 'failed'
        WHEN 'cancelled' THEN 'cancelled'
        ELSE 'progress' END);
    PERFORM pg_advisory_xact_lock(8151623);
    INSERT INTO file_events (file_id, user_id, event_type, data)
    VALUES (file_uuid, rec.user_id, etype, to_jsonb(rec) - 'user_id')
    RETURNING id INTO new_id;
    PERFORM pg_notify('imuflow_file_events', new_id::text);
    RETURN new_id;
END;
$$;

-- Wake the outbox relays as soon as something is written (they also poll, as a fallback).
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('imuflow_outbox', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- The seed's progress query, kept by name: one row with the displayed progress.
CREATE FUNCTION get_file_processing_progress(file_uuid uuid)
RETURNS TABLE (
    file_id uuid, status text, samples_processed bigint, sample_count bigint,
    sample_count_exact boolean, percent double precision, samples_per_second double precision,
    eta_seconds double precision, eta_low_seconds double precision,
    eta_high_seconds double precision, batch_number integer,
    processing_started_at timestamptz, last_checkpoint_at timestamptz,
    elapsed_seconds double precision
)
LANGUAGE sql STABLE AS $$
    SELECT r.id, r.status, r.samples_processed, r.sample_count, r.sample_count_exact,
           r.percent, r.samples_per_second, r.eta_seconds, r.eta_low_seconds,
           r.eta_high_seconds, r.batch_number, r.processing_started_at, r.last_checkpoint_at,
           EXTRACT(EPOCH FROM (COALESCE(r.completed_at, now()) - r.processing_started_at))::double precision
    FROM file_records r WHERE r.id = file_uuid;
$$;
