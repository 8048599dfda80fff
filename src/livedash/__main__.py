"""`python -m livedash`: the same as the `livedash` command."""

from livedash.cli import main

# Guarded: a process started with "spawn" (the migration of `livedash serve`) imports this
# module again, and must not run the command line a second time.
if __name__ == "__main__":
    main()
