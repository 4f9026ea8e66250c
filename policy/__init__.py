"""The release model: one versioned YAML file (environments, gates, trains, windows and
freezes, dependencies, owners) that every decision cites by its sha256."""

from policy.announce import policy_updated
from policy.loader import LoadedModel, ModelError, Problem, load, load_text
from policy.model import ReleaseModel
from shared.db import MigrationSet

# The ``policy`` table each service that acts on the model keeps in its own schema.
POLICY_MIGRATIONS = MigrationSet("policy", "policy")

__all__ = [
    "POLICY_MIGRATIONS",
    "LoadedModel",
    "ModelError",
    "Problem",
    "ReleaseModel",
    "load",
    "load_text",
    "policy_updated",
]
