"""Which sync protocol a request speaks (header ``Tandem-Sync-Protocol``), and the client's
app version (header ``Tandem-Client-Version``, kept on every stored mutation)."""

from __future__ import annotations

from rest_framework.request import Request

from apps.common.api.errors import DomainError
from apps.sync import conf

PROTOCOL_HEADER = "Tandem-Sync-Protocol"
CLIENT_VERSION_HEADER = "Tandem-Client-Version"
_PROTOCOL_DIGITS = 9


def protocol_of(request: Request, *, minimum: int = 1) -> int:
    """The request's protocol version; 426 when this server does not speak it (400 when the
    header is not a number).

    No header means version 1, the feed as first shipped, so older clients keep working.
    """
    raw = request.headers.get(PROTOCOL_HEADER)
    supported = sorted(conf.SUPPORTED_PROTOCOLS)
    if raw is None:
        version = 1
    elif raw.isascii() and raw.isdigit():
        # Thousands of digits are no protocol this server speaks, and int() refuses to read
        # them (a ValueError, which answered 500).
        significant = raw.lstrip("0") or "0"
        version = int(significant) if len(significant) <= _PROTOCOL_DIGITS else -1
    else:
        # Not int()'s reading: it takes "1_0" as 10 and "+2" or a full-width digit as 2.
        raise DomainError(
            f"{PROTOCOL_HEADER} must be a whole number.", code="invalid", field=PROTOCOL_HEADER, status_code=400
        )
    if version not in supported or version < minimum:
        usable = [v for v in supported if v >= minimum]
        raise DomainError(
            f"Sync protocol {version if version >= 0 else 'of that many digits'} is not supported here; "
            f"use one of {', '.join(map(str, usable))} (update the app).",
            code="sync_protocol_unsupported",
            field=PROTOCOL_HEADER,
            status_code=426,
            extra_body={"supported_protocols": usable},
        )
    return version


def client_version_of(request: Request) -> str:
    # Stored with each mutation: a NUL (which PostgreSQL's text refuses) is dropped.
    return (request.headers.get(CLIENT_VERSION_HEADER) or "").replace("\x00", "")[:100]
