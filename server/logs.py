"""Logging: one line per event, with the request id of the HTTP request that caused it."""

from __future__ import annotations

import json
import logging
import re
import sys
from contextvars import ContextVar
from typing import IO, Any

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


# Secrets that could reach a message by accident (an exception quoting a header or a URL):
# bearer tokens, JWTs, Stripe keys and webhook secrets, passwords in URLs and query strings.
_SECRETS = re.compile(
    r"(?i)(bearer\s+)[\w.~+/=-]+"
    r"|eyJ[\w-]+\.[\w-]+\.[\w-]+"
    r"|\b(?:sk|rk)_(?:live|test)_\w+|\bwhsec_\w+"
    r"|(://[^:/@\s]+:)[^@\s]+(@)"
    r"|((?:password|secret|token|api_key|key)=)[^&\s]+"
)


def redact(text: str) -> str:
    def mask(found: re.Match[str]) -> str:
        if found.group(1):
            return f"{found.group(1)}[redacted]"
        if found.group(2):
            return f"{found.group(2)}[redacted]{found.group(3)}"
        if found.group(4):
            return f"{found.group(4)}[redacted]"
        return "[redacted]"

    return _SECRETS.sub(mask, text)


class _RequestIdFilter(logging.Filter):
    """Adds the request id, and masks anything that looks like a secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get() or "-"
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload)

    def formatException(self, ei: Any) -> str:
        return redact(super().formatException(ei))


class _TextFormatter(logging.Formatter):
    def formatException(self, ei: Any) -> str:
        return redact(super().formatException(ei))


def configure(level: str = "INFO", *, as_json: bool = False, stream: IO[str] | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(
        _JsonFormatter()
        if as_json
        else _TextFormatter(
            "%(asctime)s %(levelname)-7s [%(request_id)s] %(name)s: %(message)s", "%H:%M:%S"
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party chatter that says nothing useful to an operator.
    for noisy in ("faiss.loader", "sentence_transformers", "httpx", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
