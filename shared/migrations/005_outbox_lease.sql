-- The relay no longer holds a transaction (or a lock) while the broker acknowledges: the
-- consumer hands what a batch emitted straight to its process's relay after the commit, and
-- the row waits under a lease meanwhile. A row whose lease ran out unsent (its process died,
-- or Kafka would not take it in time) is anyone's to publish: the relays of every instance
-- claim such rows (FOR UPDATE SKIP LOCKED), so none waits on another. A row written by other
-- work (a command, a periodic turn) has no lease: the relay woken by its NOTIFY takes it.
ALTER TABLE outbox ADD COLUMN lease_until timestamptz;
