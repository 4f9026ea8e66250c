-- Rollbacks: every deployment kept (to find the last good one), versions marked bad by a
-- rollback (not promoted again without an explicit override), and incident holds.

CREATE TABLE deployment_history (
    id           bigserial PRIMARY KEY,
    environment  text NOT NULL,
    service      text NOT NULL,
    version      text NOT NULL,
    digest       text NOT NULL,
    promotion_id text,
    rollback     boolean NOT NULL DEFAULT false,
    deployed_at  timestamptz NOT NULL
);
CREATE INDEX deployment_history_by_service ON deployment_history (environment, service, deployed_at);
INSERT INTO deployment_history (environment, service, version, digest, promotion_id, deployed_at)
    SELECT environment, service, version, digest, promotion_id, deployed_at FROM ledger;

CREATE TABLE bad_versions (
    service     text NOT NULL,
    version     text NOT NULL,
    environment text NOT NULL,   -- where it was rolled back
    incident_id text NOT NULL,
    reason      text NOT NULL,
    marked_at   timestamptz NOT NULL,
    PRIMARY KEY (service, version)
);

CREATE TABLE incident_holds (
    service     text NOT NULL,
    environment text NOT NULL,
    incident_id text NOT NULL,
    reason      text NOT NULL,
    since       timestamptz NOT NULL,
    PRIMARY KEY (service, environment, incident_id)
);

ALTER TABLE promotions ADD COLUMN rollback_of text;  -- the incident a rollback answers
