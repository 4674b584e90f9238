"""`python -m trainlab ...`: the same as the `trainlab` command."""

from trainlab.app.cli import cli

cli()
