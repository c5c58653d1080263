"""One redactor for every text that leaves a process: API answers, logs, cell output.

Two nets:

- **Values**: every token this process hands out or receives is remembered
  (:func:`remember`: the broker when it hands out or stores a token, the kernel client
  when it receives one), whatever its shape: Okta, Databricks and Snowflake tokens are
  opaque strings no pattern can recognise. The memory is bounded: the most recent
  :data:`CAPACITY` values (a token older than that has long expired).
- **Shapes**: JWTs, Google ``ya29.`` tokens, Databricks ``dapi`` tokens, PEM private
  keys, ``Bearer xxx``, and ``access_token=`` / ``refresh_token=`` / ``code=`` (and
  friends) in URLs, form bodies and JSON.

:func:`redact` applies both; :class:`RedactingHandler` applies it to every log record of
the ``jupyter_connauth`` loggers (and the drivers' and HTTP clients' loggers) before
any other handler formats it.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable

__all__ = [
    "CAPACITY",
    "MASK",
    "RedactingHandler",
    "install_log_redaction",
    "redact",
    "remember",
]

MASK = "[redacted]"
#: How many recent secret values are remembered (a few hundred bytes to a few KB each).
CAPACITY = 4096
#: Shorter values are not remembered: they would mask ordinary words.
MIN_LENGTH = 12

_SENSITIVE_NAMES = (
    r"access_token|refresh_token|id_token|subject_token|actor_token|assertion|"
    r"client_secret|code_verifier|code|token|password|private_key"
)
_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.S
        ),
        MASK,
    ),
    (re.compile(r"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}(?:\.[A-Za-z0-9_-]*)?"), MASK),
    (re.compile(r"ya29\.[A-Za-z0-9_.-]+"), MASK),
    (re.compile(r"\bdapi[0-9a-f]{16,}(?:-\d+)?"), MASK),
    (re.compile(r"(?i)\b(bearer\s+)(?!\[redacted\])[^\s,;\"'<>]{8,}"), r"\1" + MASK),
    # key=value in URLs and form bodies (also "key": "value" in JSON, below)
    (
        re.compile(rf"(?i)((?:^|[?&;\"'(#])(?:{_SENSITIVE_NAMES})=)(?!\[redacted\])[^&\s\"'<>;)]+"),
        r"\1" + MASK,
    ),
    (
        re.compile(rf"(?i)(\"(?:{_SENSITIVE_NAMES})\"\s*:\s*\")(?!\[redacted\])[^\"]+(\")"),
        r"\1" + MASK + r"\2",
    ),
)


#: Where a remembered value may sit in a text: a run of characters that are not
#: separators (a token may be inside a URL, a form body or after "token=").
_RUN = re.compile(r"[^\s\"'<>&,;()\[\]{}\\|`]{" + str(MIN_LENGTH) + ",}")


class _Values:
    """A bounded set of recent secret values, found in a text by their first characters.

    Lookups cost one dict probe per character of the text's token-like runs, however many
    values are remembered (a regex alternation of thousands of JWTs would not).
    """

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._values: OrderedDict[str, None] = OrderedDict()
        self._index: dict[str, set[str]] = {}
        self._odd: set[str] = set()  # values a run cannot hold (separators inside)
        self._lock = threading.Lock()

    def add(self, values: Iterable[str | None]) -> None:
        with self._lock:
            for value in values:
                if not isinstance(value, str) or len(value) < MIN_LENGTH:
                    continue
                if value in self._values:
                    self._values.move_to_end(value)
                    continue
                self._values[value] = None
                if _RUN.fullmatch(value):
                    self._index.setdefault(value[:MIN_LENGTH], set()).add(value)
                else:
                    self._odd.add(value)
                while len(self._values) > self.capacity:
                    old, _ = self._values.popitem(last=False)
                    self._odd.discard(old)
                    bucket = self._index.get(old[:MIN_LENGTH])
                    if bucket is not None:
                        bucket.discard(old)
                        if not bucket:
                            del self._index[old[:MIN_LENGTH]]

    def mask(self, text: str) -> str:
        if not self._values:
            return text
        with self._lock:
            index, odd = dict(self._index), list(self._odd)
        spans: list[tuple[int, int]] = []
        for run in _RUN.finditer(text):
            word, base, j = run.group(), run.start(), 0
            while j <= len(word) - MIN_LENGTH:
                bucket = index.get(word[j : j + MIN_LENGTH], ())
                found = [v for v in bucket if word.startswith(v, j)]
                if found:
                    longest = max(map(len, found))
                    spans.append((base + j, base + j + longest))
                    j += longest
                else:
                    j += 1
        if spans:
            parts, at = [], 0
            for a, b in spans:
                parts += [text[at:a], MASK]
                at = b
            text = "".join(parts) + text[at:]
        for value in odd:
            text = text.replace(value, MASK)
        return text

    def __len__(self) -> int:
        return len(self._values)


_VALUES = _Values()


def remember(*values: str | None) -> None:
    """Mask these values wherever :func:`redact` meets them from now on."""
    _VALUES.add(values)


def redact(text: str) -> str:
    """``text`` without any remembered secret value or anything shaped like a secret."""
    if not text:
        return text
    text = _VALUES.mask(text)
    for shape, repl in _SHAPES:
        text = shape.sub(repl, text)
    return text


class RedactingHandler(logging.Handler):
    """Redacts a record in place, before the handlers further up the logger tree see it.

    A filter on a logger only sees that logger's own records, not its children's; a
    handler on the package logger sees every record of ``jupyter_connauth.*`` on its way
    up, ahead of the root's or the Jupyter server's handlers. It writes nothing itself,
    except to :data:`logging.lastResort` when no other handler would (as Python does
    when no handler is configured anywhere).
    """

    def handle(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format: leave it to the formatter's own error
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        if not self._others_will_handle(record):
            last = logging.lastResort
            if last is not None and record.levelno >= last.level:
                last.handle(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - handle() does it
        pass

    def _others_will_handle(self, record: logging.LogRecord) -> bool:
        logger: logging.Logger | None = logging.getLogger(record.name)
        while logger is not None:
            if any(h is not self for h in logger.handlers):
                return True
            if not logger.propagate:
                return False
            logger = logger.parent
        return False


#: Our loggers, and those of the libraries that see tokens (drivers, HTTP clients,
#: OAuth): the warehouse drivers log the server's error text, token quotes included.
LOGGERS = (
    "jupyter_connauth",
    "databricks",
    "snowflake.connector",
    "google",
    "urllib3",
    "httpx2",
    "httpcore2",
    "authlib",
)


def install_log_redaction(names: Iterable[str] = LOGGERS) -> None:
    """Put one :class:`RedactingHandler` on each of these loggers (idempotent)."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(h, RedactingHandler) for h in logger.handlers):
            logger.addHandler(RedactingHandler())


install_log_redaction()
