-- A record Kafka refuses for good (too large for the topic, an invalid topic name) is set
-- aside with the broker's reason instead of blocking every record behind it. It stays here.
ALTER TABLE outbox ADD COLUMN failed_at timestamptz, ADD COLUMN error text;
DROP INDEX outbox_unsent;
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL AND failed_at IS NULL;
