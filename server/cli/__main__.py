"""`python -m server.cli`: the same command as `rodeoai`."""

from server.cli import app

app()
