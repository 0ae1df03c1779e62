"""``python -m tokencompose``: the same entry point as the ``tokencompose`` command."""

from tokencompose.cli import console

console()
