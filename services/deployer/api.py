"""The deployer's public face: the SDK a team's own deployer is written with, and the
reference agent (``LocalStateDeployer``) that ``lockstep deployer`` runs."""

from __future__ import annotations

from services.deployer.config import AgentConfig, ConfigError
from services.deployer.journal import JournalError
from services.deployer.reference import LocalStateDeployer
from services.deployer.sdk import Deployer, DeployerAgent, DeployFailed, Deployment, act_on

__all__ = [
    "AgentConfig",
    "ConfigError",
    "DeployFailed",
    "Deployer",
    "DeployerAgent",
    "Deployment",
    "JournalError",
    "LocalStateDeployer",
    "act_on",
]
