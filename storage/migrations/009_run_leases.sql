-- Runs on a shared lineage hold a lease, and each result is published by one run.
--
-- A run writing a shared (DuckLake) lineage renews its lease every few seconds by appending a row
-- (appends never conflict with other writers). A run still 'running' whose lease has ended was killed
-- or lost its catalog: readers see it as 'abandoned', with the reason, and the next writer records it.
-- A run on a lineage file holds the file's lock instead and has no lease rows.
CREATE TABLE run_leases (
    run_id     VARCHAR NOT NULL,
    renewed_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);

-- The run that publishes each result key. The first run to claim a key publishes it; another run
-- that computed the same result adopts that publication, or takes the claim over once its owner has
-- stopped without publishing.
CREATE TABLE publication_claims (
    result_key VARCHAR PRIMARY KEY,
    run_id     VARCHAR NOT NULL,
    claimed_at TIMESTAMP NOT NULL
);

ALTER TABLE runs ADD COLUMN status_reason VARCHAR;

-- Each run's status as it stands now: a lapsed lease makes a 'running' run 'abandoned'.
CREATE OR REPLACE VIEW run_effective AS
WITH lease AS (
    SELECT run_id, max(renewed_at) AS renewed_at, max(expires_at) AS expires_at
    FROM run_leases
    GROUP BY run_id
),
judged AS (
    SELECT
        r.*,
        l.renewed_at AS lease_renewed_at,
        l.expires_at AS lease_expires_at,
        r.status IN ('running', 'abandoned') AND l.expires_at IS NOT NULL
            AND l.expires_at < timezone('UTC', now()) AS lapsed
    FROM runs r
    LEFT JOIN lease l ON l.run_id = r.run_id
)
SELECT
    run_id,
    started_at,
    CASE WHEN lapsed THEN coalesce(finished_at, lease_renewed_at) ELSE finished_at END AS finished_at,
    CASE
        WHEN lapsed THEN 'abandoned'
        WHEN status = 'abandoned' AND lease_expires_at IS NOT NULL THEN 'running'
        ELSE status
    END AS status,
    input,
    params,
    prefect_flow_run_id,
    code_version,
    CASE
        WHEN lapsed THEN 'no lease renewal since ' || strftime(lease_renewed_at, '%Y-%m-%d %H:%M:%S')
            || ' UTC (lease ended ' || strftime(lease_expires_at, '%H:%M:%S')
            || '): its process was killed or lost the lineage catalog'
        WHEN status = 'abandoned' AND lease_expires_at IS NOT NULL THEN NULL
        ELSE status_reason
    END AS status_reason,
    lease_renewed_at,
    lease_expires_at
FROM judged;

CREATE OR REPLACE VIEW item_state_effective AS
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
        ELSE coalesce(
            s.error,
            'run ' || r.status || ' before the item finished (last stage: ' || coalesce(s.stage, 'none') || ')'
        )
    END AS error
FROM item_state s
JOIN run_effective r ON r.run_id = s.run_id
LEFT JOIN run_sources rs ON rs.run_id = s.run_id AND rs.source = s.source AND rs.segment = s.segment;

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
    coalesce(att.stage_total_s, 0) AS stage_total_s,
    r.status_reason
FROM run_effective r
LEFT JOIN src ON src.run_id = r.run_id
LEFT JOIN st ON st.run_id = r.run_id
LEFT JOIN att ON att.run_id = r.run_id
LEFT JOIN reused ON reused.run_id = r.run_id;
