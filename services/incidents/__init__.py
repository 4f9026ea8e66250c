"""The incidents service: health signals in, incidents (grouped and de-duplicated), automated
rollback of a deployment that breaches the release model's rollback criteria, kill switches,
runbooks, escalation, and the material for a postmortem."""
