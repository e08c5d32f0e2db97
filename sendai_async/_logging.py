"""The ``sendai_async`` logger, and ``SENDAI_LOG`` for people who configure no logging."""

from __future__ import annotations

import logging
import os

logger = logging.getLogger("sendai_async")

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO}


def configure_from_env() -> None:
    """Attach a stderr handler when ``SENDAI_LOG`` is ``debug`` or ``info``.

    An application that configures logging itself keeps full control: we only add a handler
    when the logger has none, and only when asked to.
    """
    level = _LEVELS.get(os.environ.get("SENDAI_LOG", "").strip().lower())
    if level is None or logger.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
