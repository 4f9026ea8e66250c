-- The incidents service.

-- Every deployment and rollback the deployers reported, with the trace it belongs to.
CREATE TABLE deployments (
    id           bigserial PRIMARY KEY,
    environment  text NOT NULL,
    service      text NOT NULL,
    version      text NOT NULL,
    digest       text NOT NULL,
    purl         text NOT NULL,
    promotion_id text NOT NULL,
    rollback     boolean NOT NULL,
    traceparent  text,
    deployed_at  timestamptz NOT NULL
);
CREATE INDEX deployments_latest ON deployments (environment, service, deployed_at DESC);

-- Signals, attributed to the version that ran when they were true.
CREATE TABLE signals (
    id          bigserial PRIMARY KEY,
    event_id    text NOT NULL,
    service     text NOT NULL,
    environment text NOT NULL,
    metric      text NOT NULL,
    value       double precision,
    version     text,
    kind        text NOT NULL,
    status      text NOT NULL,
    source      text NOT NULL,
    dedup_key   text,
    observed_at timestamptz NOT NULL
);
CREATE INDEX signals_by_metric ON signals (service, environment, metric, version);

-- A criterion's current breach: since when, and how many passing checks it has tolerated.
CREATE TABLE breaches (
    criterion   text NOT NULL,
    service     text NOT NULL,
    environment text NOT NULL,
    started_at  timestamptz NOT NULL,
    last_at     timestamptz NOT NULL,
    misses      int NOT NULL DEFAULT 0,
    PRIMARY KEY (criterion, service, environment)
);

CREATE TABLE incidents (
    id                text PRIMARY KEY,
    dedup_key         text NOT NULL,
    service           text NOT NULL,
    environment       text NOT NULL,
    state             text NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),
    title             text NOT NULL,
    criterion         text,
    version           text,
    digest            text,
    purl              text,
    promotion_id      text,
    traceparent       text,
    drill             boolean NOT NULL DEFAULT false,
    signals           int NOT NULL DEFAULT 1,
    first_signal_at   timestamptz NOT NULL,
    detected_at       timestamptz NOT NULL,
    acknowledged_at   timestamptz,
    acknowledged_by   text,
    rollback_at       timestamptz,    -- rollback.requested
    rolled_back_at    timestamptz,    -- service.rolledback consumed
    rolled_back_to    text,
    resolved_at       timestamptz,
    resolved_by       text,
    escalation_level  int NOT NULL DEFAULT -1
);
CREATE UNIQUE INDEX incidents_one_open ON incidents (dedup_key) WHERE state <> 'resolved';

-- What happened, in order: the material of a postmortem.
CREATE TABLE timeline (
    id          bigserial PRIMARY KEY,
    incident_id text NOT NULL REFERENCES incidents,
    at          timestamptz NOT NULL,
    kind        text NOT NULL,
    detail      text NOT NULL
);

CREATE TABLE runbook_runs (
    incident_id     text PRIMARY KEY REFERENCES incidents,
    runbook         text NOT NULL,
    steps           jsonb NOT NULL,
    next_step       int NOT NULL DEFAULT 0,
    state           text NOT NULL CHECK (state IN ('running', 'paused', 'done', 'aborted')),
    step_started_at timestamptz
);

-- Webhooks to send (generic JSON or PagerDuty Events API v2), retried with backoff.
CREATE TABLE notifications (
    id              bigserial PRIMARY KEY,
    incident_id     text NOT NULL,
    url             text NOT NULL,
    payload         jsonb NOT NULL,
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
    attempts        int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    last_error      text
);
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE state = 'pending';

CREATE TABLE drills (
    incident_id text PRIMARY KEY,
    service     text NOT NULL,
    environment text NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    outcome     text,
    detail      text
);
