-- What a researcher sees (SPEC §7): a min/max pyramid of every file's samples, and the
-- recording summary computed from it once per run.
--
-- Why blocks: a whole-file preview of a 60M-sample file must answer in well under a
-- second, so it cannot scan imu_samples. The parser writes, in each batch's transaction,
-- one row per block of `level` samples (256, 2048 or 16384, cut from the batch's first sample,
-- the batch's last block shorter) per sensor: its first sample_index, count, first and
-- last t_ns, per axis min/max/sum/non-NULL count, and clipped counts where the reader
-- knows the device's range. The preview buckets blocks in SQL and scans imu_samples only
-- at the edges of a range and for ranges of a few hundred thousand samples.
CREATE TABLE IF NOT EXISTS imu_preview_blocks (
    file_id      uuid NOT NULL REFERENCES imu_data_files (id) ON DELETE CASCADE,
    sensor       text NOT NULL DEFAULT '',  -- '' where the file names no sensor
    level        integer NOT NULL,          -- samples per (full) block: 256, 2048 or 16384
    first_index  bigint NOT NULL,           -- sample_index of the block's first sample
    n            integer NOT NULL,
    t_first      bigint,                    -- NULL where the file has no time base
    t_last       bigint,
    -- Intervals inside the block (level 256 only): the median and longest, and how
    -- many exceed 5 x the median (gaps); intervals between blocks come from t_first/t_last.
    dt_median    bigint,
    dt_max       bigint,
    gaps         integer,
    mins         real[] NOT NULL,           -- 9 entries, VALUE_COLUMNS order, NULL = no value
    maxs         real[] NOT NULL,
    sums         double precision[] NOT NULL,
    counts       integer[] NOT NULL,        -- non-NULL values per axis
    clipped      integer[],                 -- samples at the device's range per axis (or NULL)
    PRIMARY KEY (file_id, sensor, level, first_index)
);
CREATE INDEX IF NOT EXISTS imu_preview_blocks_time
    ON imu_preview_blocks (file_id, sensor, level, t_first);

-- The summary of a completed run, computed on first request (summary.py) and kept.
CREATE TABLE IF NOT EXISTS imu_file_summaries (
    file_id      uuid PRIMARY KEY REFERENCES imu_data_files (id) ON DELETE CASCADE,
    run          integer NOT NULL,
    summary      jsonb NOT NULL,
    computed_at  timestamptz NOT NULL DEFAULT now()
);
