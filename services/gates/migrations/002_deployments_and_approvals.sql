-- What gates need from deployments (soak time, the baseline a benchmark is compared with)
-- and from people (approvals).

CREATE TABLE deployments (
    environment  text NOT NULL,
    service      text NOT NULL,
    version      text NOT NULL,
    deployed_at  timestamptz NOT NULL,
    PRIMARY KEY (environment, service, version)
);

CREATE TABLE running (
    environment  text NOT NULL,
    service      text NOT NULL,
    version      text NOT NULL,
    PRIMARY KEY (environment, service)
);

CREATE TABLE approvals (
    service      text NOT NULL,
    version      text NOT NULL,
    environment  text NOT NULL,
    responder    text NOT NULL,
    decision     text NOT NULL,
    decided_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, version, environment, responder)
);

-- A build whose soak ends at due_at: judged again then (the periodic turn).
CREATE TABLE soaking (
    service      text NOT NULL,
    version      text NOT NULL,
    due_at       timestamptz NOT NULL,
    PRIMARY KEY (service, version)
);
