"""The deployer agent and its SDK: how a team's own deployer acts on Lockstep's promotions.

Write one method::

    class MyDeployer(Deployer):
        async def deploy(self, d: Deployment) -> None:
            ...  # roll out d.artifact_id (digest d.digest) to d.environment; raise DeployFailed

and run it with ``DeployerAgent(MyDeployer(), settings, environments=["prod-eu"])``. Test it
without Lockstep running with ``services.deployer.testing.DeployerHarness``.
"""

from services.deployer.sdk import Deployer, DeployerAgent, DeployFailed, Deployment, act_on

__all__ = ["DeployFailed", "Deployer", "DeployerAgent", "Deployment", "act_on"]
