-- The flags service: flagd flag definitions per environment, every change kept.

-- One row per environment: the parts of its flagd flag set that are not flags, and a
-- revision that moves on every change (evaluators reload on it; ETags derive from results).
CREATE TABLE environments (
    environment text PRIMARY KEY,
    revision    bigint NOT NULL DEFAULT 0,
    evaluators  jsonb NOT NULL DEFAULT '{}'::jsonb,  -- flagd $evaluators
    metadata    jsonb NOT NULL DEFAULT '{}'::jsonb   -- flagd flag-set metadata
);

CREATE TABLE flags (
    environment text NOT NULL REFERENCES environments,
    flag_key    text NOT NULL,
    version     int NOT NULL CHECK (version >= 1),
    definition  jsonb NOT NULL,  -- the flagd flag, as stored and exported
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    updated_by  text NOT NULL,
    PRIMARY KEY (environment, flag_key)
);

-- Every change: who, when, why, and the definition before and after (NULL: none).
CREATE TABLE flag_changes (
    environment text NOT NULL,
    flag_key    text NOT NULL,
    version     int NOT NULL,
    action      text NOT NULL,
    source      text NOT NULL,  -- cli | api | kafka | rollout
    changed_by  text NOT NULL,
    reason      text NOT NULL,
    previous    jsonb,
    definition  jsonb,
    request_id  text,           -- the flagchange.requested applied, if any
    at          timestamptz NOT NULL,
    PRIMARY KEY (environment, flag_key, version)
);

-- Gradual rollouts: steps of [percent, seconds after the start]; the service advances them.
CREATE TABLE rollouts (
    id            bigserial PRIMARY KEY,
    environment   text NOT NULL,
    flag_key      text NOT NULL,
    variant       text NOT NULL,   -- the variant being rolled out
    other_variant text NOT NULL,   -- the rest get this one
    steps         jsonb NOT NULL,
    next_step     int NOT NULL,    -- index of the next step due
    started_at    timestamptz NOT NULL,
    started_by    text NOT NULL,
    state         text NOT NULL CHECK (state IN ('active', 'halted', 'done', 'replaced')),
    ended_at      timestamptz,
    ended_reason  text
);
CREATE UNIQUE INDEX rollouts_one_active ON rollouts (environment, flag_key)
    WHERE state = 'active';

-- API keys, stored as sha256; each is scoped to one environment ('*': all, admin only).
CREATE TABLE api_keys (
    key_hash    text PRIMARY KEY,
    key_prefix  text NOT NULL,
    environment text NOT NULL,
    role        text NOT NULL CHECK (role IN ('evaluate', 'admin')),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);

-- When each flag was last evaluated (flushed by the HTTP edge every few seconds).
CREATE TABLE evaluations (
    environment       text NOT NULL,
    flag_key          text NOT NULL,
    last_evaluated_at timestamptz NOT NULL,
    count             bigint NOT NULL,
    PRIMARY KEY (environment, flag_key)
);
