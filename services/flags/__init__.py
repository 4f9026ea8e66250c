"""The flags service: flagd-compatible flag definitions per environment, versioned changes
emitted as ``flag.changed``, gradual rollouts, and OpenFeature remote evaluation (OFREP)."""
