-- One row per (source, segment): two segments of one video are two rows of a run, not one.
-- `segment` is '' for the whole video, else the requested start and duration (e.g. '1.5+1', '2+' for
-- "from 2 s to the end"). `source_display` keeps the spelling the user gave; `source` is the identity.
-- Rows of earlier versions become whole-video rows.

DROP VIEW IF EXISTS failures;
DROP VIEW IF EXISTS item_status;
DROP VIEW IF EXISTS item_latest;
DROP VIEW IF EXISTS run_summary;
DROP VIEW IF EXISTS item_state_effective;
DROP VIEW IF EXISTS item_cot;

CREATE TABLE run_sources_v3 (
    run_id                 VARCHAR NOT NULL,
    source                 VARCHAR NOT NULL,
    segment                VARCHAR NOT NULL DEFAULT '',
    source_display         VARCHAR,
    start_sec              DOUBLE,
    requested_duration_sec DOUBLE,
    item_id                VARCHAR,
    manifest_id            VARCHAR,
    caption                VARCHAR,
    caption_cot            VARCHAR,
    position               INTEGER,
    PRIMARY KEY (run_id, source, segment)
);
INSERT INTO run_sources_v3
    (run_id, source, segment, source_display, start_sec, item_id, manifest_id, caption, caption_cot, position)
SELECT rs.run_id, rs.source, '', rs.source, coalesce(i.start_sec, 0), rs.item_id, rs.manifest_id, rs.caption,
       rs.caption_cot, rs.position
FROM run_sources rs
LEFT JOIN items i USING (item_id);
DROP TABLE run_sources;
ALTER TABLE run_sources_v3 RENAME TO run_sources;

CREATE TABLE item_state_v3 (
    run_id     VARCHAR NOT NULL,
    source     VARCHAR NOT NULL,
    segment    VARCHAR NOT NULL DEFAULT '',
    item_id    VARCHAR,
    status     VARCHAR NOT NULL CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'rejected')),
    stage      VARCHAR,
    error      VARCHAR,
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, source, segment)
);
INSERT INTO item_state_v3 (run_id, source, segment, item_id, status, stage, error, updated_at)
SELECT run_id, source, '', item_id, status, stage, error, updated_at FROM item_state;
DROP TABLE item_state;
ALTER TABLE item_state_v3 RENAME TO item_state;

ALTER TABLE stage_attempts ADD COLUMN segment VARCHAR DEFAULT '';
ALTER TABLE cot ADD COLUMN segment VARCHAR DEFAULT '';

CREATE VIEW item_state_effective AS
SELECT
    s.run_id,
    s.source,
    s.segment,
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
LEFT JOIN run_sources rs ON rs.run_id = s.run_id AND rs.source = s.source AND rs.segment = s.segment;

-- One row per (source, segment): its latest recorded outcome (by run start, then update time). An
-- unfinished row of a later run does not hide an earlier outcome; it only shows when there is none.
CREATE VIEW item_latest AS
SELECT * EXCLUDE (rn)
FROM (
    SELECT
        e.*,
        row_number() OVER (
            PARTITION BY e.source, e.segment
            ORDER BY e.recorded_terminal DESC, e.run_started_at DESC, e.updated_at DESC, e.run_id DESC
        ) AS rn
    FROM item_state_effective e
)
WHERE rn = 1;

-- A whole-video row has start_sec 0 and the duration that was dubbed (the video's, up to the limit).
CREATE VIEW item_status AS
SELECT
    l.source,
    l.status,
    CASE WHEN l.status = 'succeeded' THEN NULL ELSE l.error END AS error,
    CASE WHEN l.status = 'succeeded' THEN a.uri END AS audio_uri,
    CASE WHEN l.status = 'succeeded' THEN v.uri END AS video_uri,
    coalesce(i.start_sec, rs.start_sec, 0) AS start_sec,
    coalesce(i.duration_sec, rs.requested_duration_sec) AS duration_sec,
    l.segment,
    rs.source_display,
    l.item_id,
    l.run_id,
    l.stage,
    l.updated_at
FROM item_latest l
LEFT JOIN run_sources rs ON rs.run_id = l.run_id AND rs.source = l.source AND rs.segment = l.segment
LEFT JOIN items i ON i.item_id = l.item_id
LEFT JOIN artifacts a ON a.item_id = l.item_id AND a.kind = 'audio'
LEFT JOIN artifacts v ON v.item_id = l.item_id AND v.kind = 'video';

CREATE VIEW failures AS
SELECT source, start_sec, duration_sec, item_id, run_id, stage, status, error, updated_at
FROM item_status
WHERE status IN ('failed', 'rejected');

CREATE VIEW item_cot AS
SELECT
    source,
    segment,
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
    SELECT c.*, row_number() OVER (PARTITION BY c.source, c.segment ORDER BY c.created_at DESC) AS rn
    FROM cot c
    WHERE c.source IS NOT NULL
)
WHERE rn = 1;

CREATE VIEW run_summary AS
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
    -- Items this run took from earlier runs: after ingest (which always reads the input), every stage
    -- it touched was served from cache, and its published result was reused.
    SELECT run_id, count(*) AS n_items_fully_cached
    FROM (
        SELECT run_id, item_id
        FROM stage_attempts
        WHERE item_id IS NOT NULL AND stage <> 'ingest'
        GROUP BY run_id, item_id
        HAVING bool_and(status = 'cached') AND bool_or(stage = 'publish')
    )
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
