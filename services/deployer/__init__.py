"""The deployer agent and its SDK: how a team's own deployer acts on Lockstep's promotions.

Write one method::

    class MyDeployer(Deployer):
        async def deploy(self, d: Deployment) -> None:
            ...  # roll out d.artifact_id (digest d.digest) to d.environment; raise DeployFailed

and run it with ``DeployerAgent(MyDeployer(), AgentConfig.from_env(agent="mine"),
environments=["prod-eu"]).run(stop)``. Test it without Lockstep running with
``services.deployer.testing.DeployerHarness``. The SDK needs the event contract (``events``),
aiokafka and OpenTelemetry, nothing else of Lockstep.
"""

from services.deployer.config import AgentConfig, ConfigError
from services.deployer.sdk import (
    Deployer,
    DeployerAgent,
    DeployFailed,
    Deployment,
    act_on,
    report_id,
)

__all__ = [
    "AgentConfig",
    "ConfigError",
    "DeployFailed",
    "Deployer",
    "DeployerAgent",
    "Deployment",
    "act_on",
    "report_id",
]
