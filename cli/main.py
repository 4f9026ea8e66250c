"""``lockstep``: the command line of Lockstep. This module only wires it: the root app, its
callback (which makes the invocation's ``Root``, cli/root.py) and each command group from
its own module."""

from __future__ import annotations

import typer

from cli.approvals import approve, reject
from cli.artifacts import artifacts_app
from cli.audit import audit_app
from cli.env import env_app
from cli.flags import flags_app
from cli.incidents import drill_app, hold_app, incidents_app
from cli.infra import demo, infra_app, topics_app
from cli.keys import keys_app
from cli.model import model_app
from cli.publish import publish_app
from cli.root import Root
from cli.run import deployer, run
from cli.schema import schema_app
from cli.trace import tail, trace

app = typer.Typer(help="Lockstep: coordinate releases across many teams.", no_args_is_help=True)


@app.callback()
def _root(ctx: typer.Context) -> None:
    # The one composition root: settings (built once, on first use) and the consoles.
    ctx.obj = Root()


app.command()(tail)
app.command()(trace)
app.command()(run)
app.command()(approve)
app.command()(reject)
app.command()(deployer)
app.command()(demo)
app.add_typer(publish_app, name="publish")
app.add_typer(artifacts_app, name="artifacts")
app.add_typer(infra_app, name="infra")
app.add_typer(schema_app, name="schema")
app.add_typer(topics_app, name="topics")
app.add_typer(model_app, name="model")
app.add_typer(flags_app, name="flags")
app.add_typer(incidents_app, name="incidents")
app.add_typer(drill_app, name="drill")
app.add_typer(hold_app, name="hold")
app.add_typer(env_app, name="env")
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")

if __name__ == "__main__":
    app()
