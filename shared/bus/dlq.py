"""Dead letters: a record that could not be read, or whose handler kept failing, is kept on the
DLQ topic as it was (same key, value and headers) plus headers that say why and where from.

The builder is the contract's (``events.kafka.dead_letter``), so Lockstep's services and the
agents outside it (the deployer SDK) write the same dead letters; kept here under the names
the runtime has always used."""

from __future__ import annotations

from events.kafka import DLQ_HEADER_PREFIX, MAX_ERROR_CHARS, dead_letter, reason_of

HEADER_PREFIX = DLQ_HEADER_PREFIX

__all__ = ["HEADER_PREFIX", "MAX_ERROR_CHARS", "dead_letter", "reason_of"]
