"""``python -m cli``: the ``lockstep`` command line."""

from cli.main import app

app()
