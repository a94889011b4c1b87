"""`node-agent`: parse settings, set up logging, run the agent until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from node_agent import agent, settings


def main(argv: Sequence[str] | None = None) -> int:
    """The `node-agent` command; returns the exit code (2: bad settings, 1: cannot start)."""
    config = settings.load(argv)
    configure_logging(config.log_level)
    try:
        return agent.main(config)
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130


def configure_logging(level: str) -> None:
    """Timestamped log lines on stderr; stdout carries only the listening line."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )


if __name__ == "__main__":
    sys.exit(main())
