-- Listening scores (issue 13). The qc stage records the chosen candidate's scores, how many candidates
-- were drawn per generation (best_of) and the generation the winner came from, as rows of `metrics`.
-- `item_scores_latest` puts them side by side, one row per (source, segment), from the latest run that
-- scored it; `item_scores` is its public face.
CREATE OR REPLACE VIEW item_scores_latest AS
WITH scored AS (
    SELECT
        rs.source,
        rs.segment,
        m.run_id,
        m.item_id,
        r.started_at,
        max(m.value) FILTER (WHERE m.name = 'desync_sec') AS desync_sec,
        max(m.value) FILTER (WHERE m.name = 'clap') AS clap,
        max(m.value) FILTER (WHERE m.name = 'speech') AS speech,
        max(m.value) FILTER (WHERE m.name = 'music') AS music,
        max(m.value) FILTER (WHERE m.name = 'best_of') AS best_of,
        max(m.value) FILTER (WHERE m.name = 'chosen_generation') AS chosen_generation
    FROM metrics m
    JOIN run_sources rs ON rs.run_id = m.run_id AND rs.item_id = m.item_id
    JOIN runs r ON r.run_id = m.run_id
    WHERE m.name IN ('desync_sec', 'clap', 'speech', 'music', 'best_of', 'chosen_generation')
    GROUP BY rs.source, rs.segment, m.run_id, m.item_id, r.started_at
)
SELECT
    source,
    segment,
    run_id,
    item_id,
    desync_sec,
    clap,
    speech,
    music,
    CAST(best_of AS INTEGER) AS best_of,
    CAST(chosen_generation AS INTEGER) AS chosen_generation
FROM (
    SELECT *, row_number() OVER (PARTITION BY source, segment ORDER BY started_at DESC, run_id DESC) AS rn
    FROM scored
    WHERE best_of IS NOT NULL
)
WHERE rn = 1;

CREATE OR REPLACE VIEW item_scores AS
SELECT source, desync_sec, clap, speech, music, best_of, chosen_generation
FROM item_scores_latest;
