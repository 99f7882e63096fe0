"""Structured logging: one event per line, human-readable or JSON.

Every log call goes through structlog; the standard library's loggers
(uvicorn, SQLAlchemy) are routed through the same renderer.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar

import structlog
from structlog.types import EventDict, WrappedLogger

# The id of the request being served (api/request_ids.py), None outside a request.
REQUEST_ID: ContextVar[str | None] = ContextVar("boxoffice_request_id", default=None)


def add_request_id(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """Every line written while a request runs names it (`request_id`)."""
    ident = REQUEST_ID.get()
    if ident is not None:
        event.setdefault("request_id", ident)
    return event


def configure_logging(level: str = "INFO", fmt: str = "console") -> None:
    """Set up structlog and the stdlib root logger; safe to call more than once."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        add_request_id,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        # Plain tracebacks: a rich one shows every frame's locals, and a request's locals
        # hold its headers, an API key among them.
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler()
    # Other libraries' records (uvicorn's "Exception in ASGI application") get their
    # traceback as plain text too, before either renderer sees it.
    foreign: list[structlog.types.Processor] = [*shared, structlog.processors.format_exc_info]
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=foreign, processor=renderer)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Schema checks at start-up would otherwise log Alembic chatter on every boot.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))
