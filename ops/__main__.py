"""`python -m ops` is the `sluice` console script."""

from ops.cli import main

main(prog_name="sluice")
