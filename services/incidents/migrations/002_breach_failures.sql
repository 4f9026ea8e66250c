-- A breach counts its failed checks (the criterion's `tolerate` is how many are let pass).
ALTER TABLE breaches RENAME COLUMN misses TO failures;
ALTER TABLE breaches ALTER COLUMN failures SET DEFAULT 1;
