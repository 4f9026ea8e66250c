-- One shape of the policy table on every install: the gates service's first migration of old
-- created it with `updated_by text NOT NULL` (001_policy.sql keeps a table that exists), a
-- fresh install has it nullable. Dropping a NOT NULL that is not there is no error.
ALTER TABLE policy ALTER COLUMN updated_by DROP NOT NULL;
