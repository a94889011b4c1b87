"""`node-agent`: parse settings, set up logging, run the agent until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import NoReturn

from node_agent import agent, settings


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The `node-agent` command: exit 0 on a clean stop, 2 on bad settings, 1 if it cannot start."""
    argv = sys.argv[1:] if argv is None else argv
    if list(argv[:1]) == ["service"]:  # `node-agent service install|uninstall|status`
        from node_agent.install.cli import agent_main

        sys.exit(agent_main(argv))
    config = settings.load(argv)
    configure_logging(config.log_level, config.log_file)
    try:
        code = agent.main(config)
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        code = 130
    exit_now(code)


def configure_logging(level: str, log_file: Path | None = None) -> None:
    """Timestamped log lines on stderr, or a bounded rotating file; stdout: the listening line."""
    handler: logging.Handler = logging.StreamHandler(sys.stderr)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = RotatingFileHandler(
            log_file, maxBytes=settings.LOG_FILE_BYTES, backupCount=settings.LOG_FILE_BACKUPS
        )
    logging.basicConfig(
        level=level.upper(),
        handlers=[handler],
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )


def exit_now(code: int) -> NoReturn:
    """Flush and leave without interpreter teardown.

    Everything is closed by now. MLX can abort in its static destructors after a failed
    safetensors load on a worker thread, which would turn a clean stop into SIGABRT.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
