"""Email through Django's email backends (EMAIL_BACKEND: SMTP, or any other Django backend)."""

from __future__ import annotations

import smtplib
from email.utils import make_msgid

from django.conf import settings
from django.core.mail import EmailMessage, get_connection

from apps.notifications.channels.base import Message, SendResult


class DjangoEmailBackend:
    def send(self, address: str, message: Message) -> SendResult:
        message_id = make_msgid(domain="tandem.invalid")
        email = EmailMessage(
            subject=message.email_subject(),
            body=message.email_body(),
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[address],
            headers={"Message-ID": message_id},
            connection=get_connection(settings.EMAIL_BACKEND, fail_silently=False),
        )
        try:
            email.send()
        except smtplib.SMTPRecipientsRefused:
            return SendResult.failed("email: recipient refused")
        except (smtplib.SMTPException, OSError) as error:
            return SendResult.retry(f"email: {type(error).__name__}")
        return SendResult.sent(message_id)
