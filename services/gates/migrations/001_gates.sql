-- The gates service (the release model in force is policy's table): what it knows of each build, its decisions.

CREATE TABLE builds (
    service       text NOT NULL,
    version       text NOT NULL,
    digest        text NOT NULL,
    purl          text NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, version)
);

-- Evidence as the artifacts service recorded it (attached to a registered build).
CREATE TABLE evidence (
    event_id    text PRIMARY KEY,
    service     text NOT NULL,
    version     text NOT NULL,
    kind        text NOT NULL,
    passed      boolean NOT NULL,
    details     jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX evidence_by_build ON evidence (service, version);

-- The last decided verdict per build and environment; a new event only when it changes.
CREATE TABLE decisions (
    service       text NOT NULL,
    version       text NOT NULL,
    environment   text NOT NULL,
    result        text NOT NULL,
    score         double precision NOT NULL,
    policy_sha256 text NOT NULL,
    decided_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, version, environment)
);
