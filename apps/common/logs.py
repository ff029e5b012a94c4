"""Log lines that never carry what a database error quotes.

PostgreSQL's error messages quote data: a NOT NULL or CHECK violation's detail is the whole
failing row ("Failing row contains (…)"), a unique violation's the key ("Key
(phone_number)=(…) already exists"), and even a primary message may quote a value ('invalid
input syntax for type date: "…"'). A person's names, date of birth and phone number are plain
columns, so the text of such an error in a log is health information in the log.

``RedactingFormatter`` (the console handler's, in ``LOGGING``) writes a record as
``logging.Formatter`` does, except where a database error (``django.db.Error`` or
``psycopg.Error``) is the record's exception or anywhere in its chain of causes and contexts,
or an argument of its message. Such an error is written as its type, its SQLSTATE and the
names the server's diagnostics give (constraint, table, column), never its message, detail,
hint or context; and wherever the record's text still quotes the error (Celery's "Task …
raised unexpected: IntegrityError('…')", another exception's message built from it), the quote
is replaced. Other exceptions are written unchanged.

One exception to the rule: an error with no SQLSTATE of the connection kind (``psycopg``'s
``OperationalError`` and ``InterfaceError``: the server could not be reached, the connection
broke) keeps its message, which names a host or a socket and never data, and without which
an outage could not be told apart from a wrong password.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any

import psycopg
from django.db import Error as DjangoDatabaseError

WITHHELD = "[database error text withheld]"

_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def is_database_error(error: BaseException) -> bool:
    return isinstance(error, DjangoDatabaseError | psycopg.Error)


def chain(error: BaseException | None) -> Iterator[BaseException]:
    """The error, its causes and contexts (suppressed ones too) and a group's members, each once."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += [current.__cause__, current.__context__]
        if isinstance(current, BaseExceptionGroup):
            pending += current.exceptions


def _psycopg_error(error: BaseException) -> psycopg.Error | None:
    """The psycopg error behind a database error (Django's wrapper raises from it)."""
    return next((link for link in chain(error) if isinstance(link, psycopg.Error)), None)


def _shows_message(error: BaseException, sqlstate: str | None) -> bool:
    return sqlstate is None and isinstance(error, psycopg.OperationalError | psycopg.InterfaceError)


def describe(error: BaseException) -> str:
    """What may be logged of a database error: its SQLSTATE and the names the server gave."""
    source = _psycopg_error(error)
    sqlstate = source.sqlstate if source is not None else None
    parts = [f"SQLSTATE {sqlstate}"] if sqlstate else ["no SQLSTATE"]
    if source is not None:
        diag = source.diag
        for label, name in (
            ("constraint", diag.constraint_name),
            ("table", diag.table_name),
            ("column", diag.column_name),
        ):
            if name:
                parts.append(f"{label} {name}")
    if source is not None and _shows_message(source, sqlstate):
        return f"{', '.join(parts)}: {source}"
    return f"{', '.join(parts)} {WITHHELD}"


def _type_name(error: BaseException) -> str:
    kind = type(error)
    if kind.__module__ in ("__main__", "builtins"):
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def one_line(error: BaseException) -> str:
    """A database error as the last line of its traceback would show it, without its text."""
    return f"{_type_name(error)}: {describe(error)}"


def _quoted_texts(errors: list[BaseException]) -> list[tuple[str, str]]:
    """Every form in which the withheld text of these errors could appear in a log line, each
    with what replaces it: the error's description where it stood whole, a mark for a part."""
    replacements: dict[str, str] = {}
    for error in errors:
        source = _psycopg_error(error)
        if source is not None and _shows_message(source, source.sqlstate):
            continue
        message = str(error)
        parts = [line.strip() for line in message.splitlines()]
        if source is not None:
            diag = source.diag
            for text in (diag.message_primary, diag.message_detail, diag.message_hint, diag.context):
                parts += [text or "", *(line.strip() for line in (text or "").splitlines())]
        replacements.update((part, WITHHELD) for part in parts if part)
        replacements[message] = describe(error)
        replacements[repr(error)] = one_line(error)
    # Longest first, so a whole message goes before the lines it is made of.
    return sorted(replacements.items(), key=lambda item: len(item[0]), reverse=True)


def _format_exception(error: BaseException, tb: TracebackType | None, seen: set[int]) -> list[str]:
    """As traceback.format_exception writes the chain, a database error's last line aside."""
    seen.add(id(error))
    lines: list[str] = []
    cause, context = error.__cause__, error.__context__
    if cause is not None and id(cause) not in seen:
        lines += [*_format_exception(cause, cause.__traceback__, seen), _CAUSE]
    elif context is not None and not error.__suppress_context__ and id(context) not in seen:
        lines += [*_format_exception(context, context.__traceback__, seen), _CONTEXT]
    if tb is not None:
        lines += ["Traceback (most recent call last):\n", *traceback.format_tb(tb)]
    if is_database_error(error):
        lines.append(f"{one_line(error)}\n")
    else:
        lines += traceback.format_exception_only(type(error), error)
    if isinstance(error, BaseExceptionGroup):
        for number, member in enumerate(error.exceptions, 1):
            nested = "".join(_format_exception(member, member.__traceback__, seen))
            lines.append(f"+---------------- {number} ----------------\n")
            lines += [f"| {line}\n" for line in nested.splitlines()]
    return lines


class RedactingFormatter(logging.Formatter):
    """logging.Formatter, but a database error's text never reaches the output."""

    def format(self, record: logging.LogRecord) -> str:
        errors = self._database_errors(record)
        if not errors:
            return super().format(record)
        # A copy: the record goes on to other handlers, and one may have cached its own
        # rendering of the traceback in exc_text.
        safe = logging.makeLogRecord(record.__dict__)
        safe.args = self._safe_args(record.args)
        safe.exc_text = None
        text = super().format(safe)
        for quoted, replacement in _quoted_texts(errors):
            text = text.replace(quoted, replacement)
        return text

    def formatException(self, ei: Any) -> str:
        _, error, tb = ei
        if error is None or not any(is_database_error(link) for link in chain(error)):
            return super().formatException(ei)
        return "".join(_format_exception(error, tb, set())).rstrip("\n")

    @staticmethod
    def _database_errors(record: logging.LogRecord) -> list[BaseException]:
        roots: list[BaseException] = []
        if record.exc_info and record.exc_info[1] is not None:
            roots.append(record.exc_info[1])
        args = record.args
        values = args.values() if isinstance(args, Mapping) else args or ()
        roots += [value for value in values if isinstance(value, BaseException)]
        return [link for root in roots for link in chain(root) if is_database_error(link)]

    @staticmethod
    def _safe_args(args: Any) -> Any:
        def safe(value: Any) -> Any:
            if isinstance(value, BaseException) and any(is_database_error(link) for link in chain(value)):
                return one_line(value) if is_database_error(value) else value
            return value

        if isinstance(args, Mapping):
            return {key: safe(value) for key, value in args.items()}
        if isinstance(args, tuple):
            return tuple(safe(value) for value in args)
        return args
