"""One logging set-up for the scripts: the run's own lines (steps, monitor, refinement) readable, the HTTP
libraries quiet. With a served judge, `httpx` alone logs one line per request at INFO: hundreds a training step."""

from __future__ import annotations

import logging

HTTP_LOGGERS = ("httpx", "httpcore", "openai", "aiohttp", "urllib3")


def setup_logging(level: int = logging.INFO) -> None:
    """Log at `level` to stderr with time and logger name; HTTP client libraries at WARNING at most."""
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s")
    for name in HTTP_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
