"""`python -m growsearch` is the `growsearch` command."""

from growsearch.cli import app

app(prog_name="growsearch")
