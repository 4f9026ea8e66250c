"""``lockstep model``: the release model (policy as code): validate one, put one in force."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.publish import publish_and_say
from cli.root import Root, of
from policy import LoadedModel

model_app = typer.Typer(help="The release model (policy as code).", no_args_is_help=True)


def _load_or_refuse(root: Root, file: Path) -> LoadedModel:
    """The model in ``file``, or every problem as ``file:line: reason`` and exit 1."""
    from policy import ModelError, load

    if not file.is_file():
        raise root.fail(f"{file}: no such file")
    try:
        return load(file)
    except ModelError as exc:
        for problem in exc.problems:
            root.err.print(str(problem), highlight=False, markup=False, soft_wrap=True)
        problems = len(exc.problems)
        raise root.fail(f"{file}: {problems} problem(s); the model is refused", code=1) from None
    except OSError as exc:
        raise root.fail(f"{file}: cannot be read ({exc.strerror or exc})", code=1) from None


@model_app.command("validate")
def model_validate(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The release model, e.g. infra/release-model.yaml")],
) -> None:
    """Check a release model; every problem is printed with its file and line."""
    root = of(ctx)
    loaded = _load_or_refuse(root, file)
    m = loaded.model
    root.out.print(
        f"{file}: valid (sha256 {loaded.sha256}): {len(m.environments)} environments, "
        f"{len(m.gates)} gates, {len(m.trains)} trains, {len(m.windows)} windows",
        highlight=False,
    )


@model_app.command("publish")
def model_publish(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The release model to put in force")],
    by: Annotated[str, typer.Option(help="Who changes it (recorded with the change)")],
) -> None:
    """Validate a release model and put it in force (a policy.updated event)."""
    from policy import policy_updated

    root = of(ctx)
    loaded = _load_or_refuse(root, file)
    event = policy_updated(loaded, updated_by=by, source=str(file))
    publish_and_say(root, event, None, principal="platform")
