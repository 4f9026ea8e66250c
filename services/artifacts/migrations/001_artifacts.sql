-- The artifacts service: immutable builds and the evidence attached to them.

CREATE TABLE artifacts (
    service           text NOT NULL,
    version           text NOT NULL,
    digest            text NOT NULL CHECK (digest ~ '^sha256:[0-9a-f]{64}$'),
    commit            text NOT NULL,
    commit_source     text,
    purl              text NOT NULL,
    sbom_uri          text,
    packaged_event_id text NOT NULL,
    trace_id          text,
    registered_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, version)
);

-- Evidence arrives in any order: before its artifact it waits as 'pending'.
CREATE TABLE evidence (
    source      text NOT NULL,
    id          text NOT NULL,
    service     text NOT NULL,
    version     text NOT NULL,
    digest      text,                 -- as the producer named it, if it did
    kind        text NOT NULL,
    passed      boolean NOT NULL,
    details     jsonb NOT NULL,
    event_type  text NOT NULL,
    state       text NOT NULL CHECK (state IN ('pending', 'attached', 'rejected')),
    reason      text,
    received_at timestamptz NOT NULL DEFAULT now(),
    attached_at timestamptz,
    PRIMARY KEY (source, id)
);
CREATE INDEX evidence_by_artifact ON evidence (service, version);

-- Every refused artifact.packaged, for `lockstep artifacts show` and audits.
CREATE TABLE rejections (
    id          bigserial PRIMARY KEY,
    purl        text NOT NULL,
    service     text,
    version     text,
    digest      text,
    code        text NOT NULL,
    reason      text NOT NULL,
    event_id    text NOT NULL,
    rejected_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rejections_by_artifact ON rejections (service, version);
