-- The release model in force, kept by each service that acts on it in its own schema
-- (policy.in_force reads and writes it). Services that ran before this table had a home of
-- its own created it in their first migration; IF NOT EXISTS keeps theirs.
CREATE TABLE IF NOT EXISTS policy (
    only_one    boolean PRIMARY KEY DEFAULT true CHECK (only_one),
    sha256      text NOT NULL,
    model       jsonb NOT NULL,
    updated_by  text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE policy ADD COLUMN IF NOT EXISTS updated_by text;
