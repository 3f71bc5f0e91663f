-- Lineage tables, one per concept. Timestamps are UTC (naive TIMESTAMP).
-- No foreign keys: DuckDB forbids updating a row that another table references, and runs and
-- items are upserted; the Python API keeps the references consistent instead.

CREATE TABLE runs (
    run_id              VARCHAR PRIMARY KEY,
    started_at          TIMESTAMP NOT NULL,
    finished_at         TIMESTAMP,
    status              VARCHAR NOT NULL CHECK (status IN ('running', 'completed', 'crashed')),
    input               VARCHAR,
    params              JSON,
    prefect_flow_run_id VARCHAR,
    code_version        VARCHAR
);

-- An item is one segment of one video content: the same bytes under two names are one item.
CREATE TABLE items (
    item_id      VARCHAR PRIMARY KEY,
    content_hash VARCHAR NOT NULL,
    start_sec    DOUBLE,
    duration_sec DOUBLE,
    probe        JSON,
    created_at   TIMESTAMP NOT NULL
);

-- A source is the input path or URI exactly as the user gave it; item_id is NULL when ingest
-- failed before the content could be hashed.
CREATE TABLE run_sources (
    run_id      VARCHAR NOT NULL,
    source      VARCHAR NOT NULL,
    item_id     VARCHAR,
    manifest_id VARCHAR,
    caption     VARCHAR,
    caption_cot VARCHAR,
    position    INTEGER,
    PRIMARY KEY (run_id, source)
);

CREATE TABLE stage_attempts (
    attempt_id     VARCHAR PRIMARY KEY,
    run_id         VARCHAR NOT NULL,
    item_id        VARCHAR,
    source         VARCHAR,
    stage          VARCHAR NOT NULL CHECK (stage IN ('ingest', 'cot', 'features', 'synthesis', 'qc', 'publish')),
    status         VARCHAR NOT NULL CHECK (status IN ('succeeded', 'failed', 'rejected', 'cached')),
    input_hash     VARCHAR,
    params         JSON,
    model_version  VARCHAR,
    prompt_version VARCHAR,
    started_at     TIMESTAMP NOT NULL,
    finished_at    TIMESTAMP NOT NULL,
    duration_s     DOUBLE NOT NULL,
    error          VARCHAR,
    details        JSON
);

-- Where each source of a run stands: the stage is the last stage reached, or the stage that failed.
CREATE TABLE item_state (
    run_id     VARCHAR NOT NULL,
    source     VARCHAR NOT NULL,
    item_id    VARCHAR,
    status     VARCHAR NOT NULL CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'rejected')),
    stage      VARCHAR,
    error      VARCHAR,
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, source)
);

-- The latest artifact of each kind per item (a rerun that regenerates it replaces the row).
CREATE TABLE artifacts (
    item_id    VARCHAR NOT NULL,
    kind       VARCHAR NOT NULL,
    uri        VARCHAR NOT NULL,
    key        VARCHAR NOT NULL,
    sha256     VARCHAR,
    bytes      BIGINT,
    run_id     VARCHAR,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (item_id, kind)
);

CREATE TABLE metrics (
    run_id  VARCHAR NOT NULL,
    item_id VARCHAR NOT NULL,
    name    VARCHAR NOT NULL,
    value   DOUBLE,
    PRIMARY KEY (run_id, item_id, name)
);

-- One row per chain-of-thought produced (or taken from the manifest) for a source.
CREATE TABLE cot (
    run_id              VARCHAR NOT NULL,
    item_id             VARCHAR,
    source              VARCHAR,
    backend             VARCHAR NOT NULL,
    model               VARCHAR,
    prompt_version      VARCHAR,
    prompt_hash         VARCHAR,
    caption             VARCHAR,
    caption_cot         VARCHAR,
    raw_answer          VARCHAR,
    parsed              JSON,
    t5_tokens           INTEGER,
    t5_truncated_tokens INTEGER,
    latency_s           DOUBLE,
    retries             INTEGER,
    error               VARCHAR,
    created_at          TIMESTAMP NOT NULL
);

-- Content-addressed results index: key = hash of the inputs plus the producer's version.
CREATE TABLE cache (
    key        VARCHAR PRIMARY KEY,
    kind       VARCHAR NOT NULL,
    uri        VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL
);
