"""Email through Django's email backends (EMAIL_BACKEND: SMTP, or any other Django backend)."""

from __future__ import annotations

import contextlib
import smtplib
from email.utils import make_msgid
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage, get_connection

from apps.notifications.channels.base import Message, SendResult


class DjangoEmailBackend:
    """Used as a context manager, every send in the block shares one connection (one SMTP session)."""

    def __init__(self) -> None:
        self._connection: Any = None

    def __enter__(self) -> DjangoEmailBackend:
        self._connection = get_connection(settings.EMAIL_BACKEND, fail_silently=False)
        return self

    def __exit__(self, *exc: object) -> None:
        # The messages were handed over already; a failed QUIT changes nothing.
        self._close_quietly()
        self._connection = None

    def send(self, address: str, message: Message) -> SendResult:
        message_id = make_msgid(domain="tandem.invalid")
        email = EmailMessage(
            subject=message.email_subject(),
            body=message.email_body(),
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[address],
            headers={"Message-ID": message_id},
            connection=self._connection or get_connection(settings.EMAIL_BACKEND, fail_silently=False),
        )
        try:
            if self._connection is not None:
                # Opened here, not by send(): a connection that send() did not open stays open.
                self._connection.open()
            email.send()
        except smtplib.SMTPRecipientsRefused:
            return SendResult.failed("email: recipient refused")
        except (smtplib.SMTPException, OSError) as error:
            if self._connection is not None:
                self._close_quietly()  # the session may be broken: the next send opens a fresh one
            return SendResult.retry(f"email: {type(error).__name__}")
        return SendResult.sent(message_id)

    def _close_quietly(self) -> None:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            self._connection.close()
