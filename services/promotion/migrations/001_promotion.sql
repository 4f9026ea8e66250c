-- The promotion service (the model in force is policy's table): builds waiting to move, what runs where.

-- A build whose gate for an environment has been decided.
CREATE TABLE candidates (
    service      text NOT NULL,
    version      text NOT NULL,
    environment  text NOT NULL,
    digest       text NOT NULL,
    purl         text NOT NULL,
    state        text NOT NULL CHECK (state IN ('waiting', 'approved', 'superseded', 'gate-failed')),
    holds        jsonb NOT NULL DEFAULT '[]',   -- what it was last told holds it
    next_check   timestamptz,                   -- a window opens or closes then
    traceparent  text,                          -- the gate decision's, to continue its trace
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, version, environment)
);
CREATE INDEX candidates_due ON candidates (next_check) WHERE state = 'waiting';

-- What runs where, from the deployers' reports.
CREATE TABLE ledger (
    environment   text NOT NULL,
    service       text NOT NULL,
    version       text NOT NULL,
    digest        text NOT NULL,
    promotion_id  text,
    deployed_at   timestamptz NOT NULL,
    PRIMARY KEY (environment, service)
);

CREATE TABLE promotions (
    promotion_id  text PRIMARY KEY,
    service       text NOT NULL,
    version       text NOT NULL,
    environment   text NOT NULL,
    digest        text NOT NULL,
    train         text,
    state         text NOT NULL CHECK (state IN ('approved', 'deployed', 'failed')),
    reason        text,
    approved_at   timestamptz NOT NULL,
    settled_at    timestamptz
);
