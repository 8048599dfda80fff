"""`python -m livedash`: the same as the `livedash` command."""

from livedash.cli import main

main()
