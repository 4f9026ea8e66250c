"""The gates service: judges each build against the gate of each environment."""
