-- Evidence whose artifact never comes no longer waits for ever: after
-- LOCKSTEP_PENDING_EVIDENCE_TTL_S the periodic turn marks it 'expired' (and says so with
-- evidence.rejected, code 'expired'). received_at is now the service clock's time of receipt.

ALTER TABLE evidence DROP CONSTRAINT IF EXISTS evidence_state_check;
ALTER TABLE evidence ADD CONSTRAINT evidence_state_check
    CHECK (state IN ('pending', 'attached', 'rejected', 'expired'));

-- What the periodic turn looks for: the oldest pending evidence, without reading the rest.
CREATE INDEX evidence_pending_since ON evidence (received_at) WHERE state = 'pending';
