-- Each window of a long video is described by its own CoT (issue 11): the cot table gets one row per
-- (item, window), with the window's index and its time range in seconds within the segment. A clip no
-- longer than one window has one row, window 0 from 0 to its duration. Rows without a planned window
-- (an item that failed before its windows were laid out, and rows recorded before this version) keep
-- NULL there and stand for the whole segment.
ALTER TABLE cot ADD COLUMN window_index INTEGER;
ALTER TABLE cot ADD COLUMN window_start_sec DOUBLE;
ALTER TABLE cot ADD COLUMN window_end_sec DOUBLE;

-- item_cot: the CoTs of the latest record of each (source, segment), one row per window, in order. The
-- columns of a one-window clip keep their names and meaning; the window columns come last.
CREATE OR REPLACE VIEW item_cot AS
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
    created_at,
    window_index,
    window_start_sec,
    window_end_sec
FROM (
    SELECT
        c.*,
        dense_rank() OVER (PARTITION BY c.source, c.segment ORDER BY c.created_at DESC, c.run_id DESC) AS latest,
        row_number() OVER (
            PARTITION BY c.source, c.segment, c.created_at, c.run_id, c.window_index ORDER BY c.item_id
        ) AS copy
    FROM cot c
    WHERE c.source IS NOT NULL
)
WHERE latest = 1 AND copy = 1;
