"""`python -m boxoffice` is the `boxoffice` command."""

from boxoffice.cli import app

app()
