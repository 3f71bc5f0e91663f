-- Views over the lineage tables. See storage/lineage.py for the rules they encode.

-- Every item_state row with the status a reader should believe. A non-terminal row (pending or
-- running) is only real while its run is still running; a run that ended (crashed, or was found
-- dead when the database was next opened for writing) leaves its unfinished items failed.
CREATE OR REPLACE VIEW item_state_effective AS
SELECT
    s.run_id,
    s.source,
    coalesce(s.item_id, rs.item_id) AS item_id,
    s.stage,
    s.updated_at,
    r.started_at AS run_started_at,
    r.status AS run_status,
    s.status IN ('succeeded', 'failed', 'rejected') AS recorded_terminal,
    CASE
        WHEN s.status IN ('succeeded', 'failed', 'rejected') OR r.status = 'running' THEN s.status
        ELSE 'failed'
    END AS status,
    CASE
        WHEN s.status IN ('succeeded', 'failed', 'rejected') OR r.status = 'running' THEN s.error
        ELSE 'run ' || r.status || ' before the item finished (last stage: ' || coalesce(s.stage, 'none') || ')'
    END AS error
FROM item_state s
JOIN runs r ON r.run_id = s.run_id
LEFT JOIN run_sources rs ON rs.run_id = s.run_id AND rs.source = s.source;

-- One row per source: its latest recorded outcome (by run start, then update time). An unfinished
-- row of a later run does not hide an earlier outcome; it only shows when the source has none.
CREATE OR REPLACE VIEW item_latest AS
SELECT * EXCLUDE (rn)
FROM (
    SELECT
        e.*,
        row_number() OVER (
            PARTITION BY e.source
            ORDER BY e.recorded_terminal DESC, e.run_started_at DESC, e.updated_at DESC, e.run_id DESC
        ) AS rn
    FROM item_state_effective e
)
WHERE rn = 1;

CREATE OR REPLACE VIEW item_status AS
SELECT
    l.source,
    l.status,
    CASE WHEN l.status = 'succeeded' THEN NULL ELSE l.error END AS error,
    CASE WHEN l.status = 'succeeded' THEN a.uri END AS audio_uri,
    CASE WHEN l.status = 'succeeded' THEN v.uri END AS video_uri,
    l.item_id,
    l.run_id,
    l.stage,
    l.updated_at
FROM item_latest l
LEFT JOIN artifacts a ON a.item_id = l.item_id AND a.kind = 'audio'
LEFT JOIN artifacts v ON v.item_id = l.item_id AND v.kind = 'video';

CREATE OR REPLACE VIEW failures AS
SELECT source, item_id, run_id, stage, status, error, updated_at
FROM item_status
WHERE status IN ('failed', 'rejected');

CREATE OR REPLACE VIEW item_cot AS
SELECT
    source,
    caption,
    caption_cot,
    backend AS cot_backend,
    model AS cot_model,
    prompt_version,
    t5_tokens,
    t5_truncated_tokens,
    error AS cot_error,
    item_id,
    run_id,
    created_at
FROM (
    SELECT c.*, row_number() OVER (PARTITION BY c.source ORDER BY c.created_at DESC) AS rn
    FROM cot c
    WHERE c.source IS NOT NULL
)
WHERE rn = 1;

CREATE OR REPLACE VIEW stage_timing AS
SELECT
    run_id,
    stage,
    count(*) AS n,
    count(*) FILTER (WHERE status = 'succeeded') AS n_succeeded,
    count(*) FILTER (WHERE status = 'failed') AS n_failed,
    count(*) FILTER (WHERE status = 'rejected') AS n_rejected,
    count(*) FILTER (WHERE status = 'cached') AS n_cached,
    sum(duration_s) AS total_s,
    avg(duration_s) AS mean_s,
    max(duration_s) AS max_s
FROM stage_attempts
GROUP BY run_id, stage;

CREATE OR REPLACE VIEW run_summary AS
WITH src AS (
    SELECT run_id, count(*) AS n_sources, count(DISTINCT item_id) AS n_items
    FROM run_sources
    GROUP BY run_id
),
st AS (
    SELECT
        run_id,
        count(*) FILTER (WHERE status = 'succeeded') AS n_succeeded,
        count(*) FILTER (WHERE status = 'failed') AS n_failed,
        count(*) FILTER (WHERE status = 'rejected') AS n_rejected,
        count(*) FILTER (WHERE status NOT IN ('succeeded', 'failed', 'rejected')) AS n_unfinished
    FROM item_state_effective
    GROUP BY run_id
),
att AS (
    SELECT
        run_id,
        count(*) AS n_attempts,
        count(*) FILTER (WHERE status = 'cached') AS n_cached_attempts,
        sum(duration_s) AS stage_total_s
    FROM stage_attempts
    GROUP BY run_id
),
reused AS (
    -- Items whose every stage in this run was served from cache.
    SELECT run_id, count(*) AS n_items_fully_cached
    FROM (
        SELECT run_id, item_id, bool_and(status = 'cached') AS all_cached
        FROM stage_attempts
        WHERE item_id IS NOT NULL
        GROUP BY run_id, item_id
    )
    WHERE all_cached
    GROUP BY run_id
)
SELECT
    r.run_id,
    r.started_at,
    r.finished_at,
    r.status,
    r.input,
    r.code_version,
    r.prefect_flow_run_id,
    epoch(r.finished_at) - epoch(r.started_at) AS wall_s,
    coalesce(src.n_sources, 0) AS n_sources,
    coalesce(src.n_items, 0) AS n_items,
    coalesce(st.n_succeeded, 0) AS n_succeeded,
    coalesce(st.n_failed, 0) AS n_failed,
    coalesce(st.n_rejected, 0) AS n_rejected,
    coalesce(st.n_unfinished, 0) AS n_unfinished,
    coalesce(att.n_attempts, 0) AS n_attempts,
    coalesce(att.n_cached_attempts, 0) AS n_cached_attempts,
    coalesce(reused.n_items_fully_cached, 0) AS n_items_fully_cached,
    coalesce(att.stage_total_s, 0) AS stage_total_s
FROM runs r
LEFT JOIN src ON src.run_id = r.run_id
LEFT JOIN st ON st.run_id = r.run_id
LEFT JOIN att ON att.run_id = r.run_id
LEFT JOIN reused ON reused.run_id = r.run_id;
