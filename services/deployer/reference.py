"""The reference deployer: it "deploys" by recording what runs where in a local state
directory, and can be told to fail for some services (to try the failure path)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from services.deployer.sdk import Deployer, DeployFailed, Deployment


class LocalStateDeployer(Deployer):
    def __init__(self, state_dir: Path, *, fail_for: set[str] | None = None) -> None:
        self._state_dir = state_dir
        self._fail_for = fail_for or set()

    async def deploy(self, deployment: Deployment) -> None:
        if deployment.service in self._fail_for:
            raise DeployFailed(f"told to fail for {deployment.service} (--fail)")
        where = self._state_dir / deployment.environment / f"{deployment.service}.json"
        where.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "version": deployment.version,
            "digest": deployment.digest,
            "promotion_id": deployment.promotion_id,
            "deployed_at": datetime.now(UTC).isoformat(),
        }
        tmp = where.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(where)  # atomic: the file always names one whole deployment

    def running(self, environment: str, service: str) -> dict[str, str] | None:
        where = self._state_dir / environment / f"{service}.json"
        if not where.exists():
            return None
        found: dict[str, str] = json.loads(where.read_text())
        return found
