"""The artifacts service: the registry of immutable builds and the evidence attached to them."""
