"""The audit service: every decision and every person's action, appended to a hash chain."""
