-- The inbox remembers what it handled, not only that it did: a digest (sha256 of the event as
-- Lockstep read it). Another record with the same source and id but other content is a
-- conflicting duplicate and is dead-lettered as such; an identical redelivery is skipped.
-- Rows written before this migration have none: for them a redelivery is skipped, as before.
ALTER TABLE inbox ADD COLUMN digest text;
