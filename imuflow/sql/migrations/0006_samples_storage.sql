-- imu_samples: a BRIN index instead of the btree on (file_id, sample_index).
--
-- Why (measured by benchmarks/storage.py, docs/benchmarks.md): maintaining the btree
-- during the parser's COPY cost more than the COPY itself (2M rows: ~2.3 s of server CPU
-- with it, ~0.9 s with BRIN or no index), and the parser's throughput is bounded by it.
-- Exactly-once storage never depended on the index (each batch commits with its resume
-- checkpoint). A job writes its samples in big contiguous runs, so per page range the
-- (file_id, sample_index) min/max is tight: reading or deleting one file touches about
-- its own pages, as with the btree. The price is paid on reads: an ordered export sorts
-- the file's rows instead of walking an index (measured within noise of the btree for a
-- 2M-sample file), and keyset pages are slower until autovacuum summarizes the newest
-- ranges (autosummarize = on asks it to as soon as a range fills).
DROP INDEX IF EXISTS imu_samples_file_idx;
CREATE INDEX IF NOT EXISTS imu_samples_file_brin ON imu_samples
    USING brin (file_id, sample_index) WITH (pages_per_range = 32, autosummarize = on);
