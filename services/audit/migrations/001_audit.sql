-- The audit service: every decision and every person's action, one entry each, in a hash
-- chain (services/audit/chain.py says how each hash is made).

CREATE TABLE entries (
    seq          bigint PRIMARY KEY CHECK (seq >= 1),
    recorded_at  timestamptz NOT NULL,
    occurred_at  timestamptz NOT NULL,   -- the event's time
    actor        text NOT NULL,
    actor_kind   text NOT NULL,          -- person, service or agent
    action       text NOT NULL,
    service      text,
    environment  text,
    version      text,
    subject      text NOT NULL,
    incident     text,                   -- the incident it is part of
    detail       text NOT NULL,
    event_id     text NOT NULL,
    event_source text NOT NULL,
    event_type   text NOT NULL,
    event_digest text NOT NULL,
    prev_hash    text NOT NULL,
    hash         text NOT NULL,
    UNIQUE (event_source, event_id)      -- one entry per event
);
CREATE INDEX entries_by_service ON entries (service, environment, seq);
CREATE INDEX entries_by_incident ON entries (incident) WHERE incident IS NOT NULL;

-- The chain's head: one row, moved in the transaction that appends, so appends made by
-- concurrent partition transactions queue on its lock and the chain stays one line.
CREATE TABLE head (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    seq  bigint NOT NULL,
    hash text NOT NULL
);
INSERT INTO head (one, seq, hash) VALUES (true, 0, repeat('0', 64));

-- Append only: an entry is never changed or removed by the service, and refused to anyone
-- else who tries without first disabling the trigger (what gets past it, `audit verify`
-- finds).
CREATE FUNCTION entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only: % refused on %', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION entries_append_only();
CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON entries
    FOR EACH STATEMENT EXECUTE FUNCTION entries_append_only();

-- Where each incident is, as incident.detected said: an acknowledgement, a runbook step or a
-- kill switch names only the incident.
CREATE TABLE incidents (
    incident_id text PRIMARY KEY,
    service     text,
    environment text,
    version     text
);

-- Flag changes asked for on an incident's behalf: request (event id) -> incident.
CREATE TABLE requests (
    request_id  text PRIMARY KEY,
    incident_id text NOT NULL
);
