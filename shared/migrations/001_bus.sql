-- The bus's tables in every service's schema (docs/architecture.md, "Effectively once").

-- Inbox: the events this service has handled. Written in the handler's own transaction, so a
-- redelivered event finds its row and is skipped. Records that could not be read at all are
-- keyed by their Kafka position (source = 'kafka:<topic>/<partition>', id = offset).
CREATE TABLE inbox (
    source      text NOT NULL,
    id          text NOT NULL,
    event_type  text,
    outcome     text NOT NULL,          -- handled | ignored | dead-lettered
    handled_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, id)
);

-- Outbox: records to publish, written in the same transaction as the state they describe.
-- The relay publishes them in id order and stamps sent_at.
CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    topic       text NOT NULL,
    key         bytea,
    value       bytea,
    header_names  text[] NOT NULL,       -- Kafka headers, names and values side by side;
    header_values bytea[] NOT NULL,      -- they keep the emitting handler's traceparent
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
