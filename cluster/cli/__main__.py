"""`python -m cluster.cli`: the same as the `cluster` command."""

from cluster.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
