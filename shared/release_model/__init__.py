"""The release model: one versioned YAML file (environments, gates, trains, windows and
freezes, dependencies, owners) that every decision cites by its sha256."""

from shared.release_model.announce import policy_updated
from shared.release_model.loader import LoadedModel, ModelError, Problem, load, load_text
from shared.release_model.model import ReleaseModel

__all__ = [
    "LoadedModel",
    "ModelError",
    "Problem",
    "ReleaseModel",
    "load",
    "load_text",
    "policy_updated",
]
