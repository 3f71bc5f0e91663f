-- A run stopped by an error (an S3 outage, a full disk, SIGTERM) records on its unfinished items why it
-- stopped; such an item shows that reason instead of the generic "run crashed before the item finished".
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
JOIN runs r ON r.run_id = s.run_id
LEFT JOIN run_sources rs ON rs.run_id = s.run_id AND rs.source = s.source AND rs.segment = s.segment;
