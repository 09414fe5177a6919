"""`python -m bourse ...`: the `bourse` command (how `bourse up --processes` starts workers)."""

from bourse.cli import main

main()
