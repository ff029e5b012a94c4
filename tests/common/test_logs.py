"""What the logs write of an error the database raised: its kind and the names it gives, never
the data PostgreSQL quotes in its message (a failing row, a duplicate key)."""

from __future__ import annotations

import datetime
import logging
import logging.config
import sys
from types import TracebackType
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.db import IntegrityError, transaction

from apps.care.models import Person
from apps.notifications.models import NotificationPreference
from tests.conftest import CrewMember
from tests.live import free_port

pytestmark = pytest.mark.django_db

PHONE = "+12125550123"
FAMILY_NAME = "Quillfeather-Okonkwo"
BIRTH_DATE = datetime.date(1987, 3, 14)

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


LOGGING: dict[str, Any] = settings.LOGGING


def configured_formatter() -> logging.Formatter:
    """The formatter of the console handler, built from settings.LOGGING as Django builds it."""
    handler = LOGGING["handlers"]["console"]
    config = dict(LOGGING["formatters"][handler["formatter"]])
    formatter = logging.config.DictConfigurator({}).configure_formatter(config)
    assert isinstance(formatter, logging.Formatter)
    return formatter


def formatted(msg: str, args: Any = (), exc_info: ExcInfo | None = None) -> str:
    record = logging.getLogger("tests.common.logs").makeRecord(
        "tests.common.logs", logging.ERROR, __file__, 1, msg, args, exc_info
    )
    return configured_formatter().format(record)


def exc_info_of(error: BaseException) -> ExcInfo:
    return type(error), error, error.__traceback__


def duplicate_phone() -> IntegrityError:
    NotificationPreference.objects.create(phone_number=PHONE)
    with pytest.raises(IntegrityError) as raised, transaction.atomic():
        NotificationPreference.objects.create(phone_number=PHONE)
    assert PHONE in str(raised.value)  # what PostgreSQL says, and the logs must not
    return raised.value


def person_without_given_name(member: CrewMember) -> IntegrityError:
    with pytest.raises(IntegrityError) as raised, transaction.atomic():
        Person.objects.create(
            program=member.unit.program,
            unit=member.unit,
            created_by=member.user,
            given_name=None,  # type: ignore[misc]  # what the database refuses
            family_name=FAMILY_NAME,
            date_of_birth=BIRTH_DATE,
            phone_number=PHONE,
        )
    assert FAMILY_NAME in str(raised.value)
    return raised.value


def test_a_unique_violation_is_logged_by_its_constraint_not_its_key() -> None:
    error = duplicate_phone()

    text = formatted("could not record the preference", exc_info=exc_info_of(error))

    assert "could not record the preference" in text
    assert "Traceback (most recent call last):" in text
    assert "django.db.utils.IntegrityError" in text
    assert "psycopg.errors.UniqueViolation" in text
    assert "23505" in text
    assert "preference_phone" in text
    assert "notifications_notificationpreference" in text
    assert PHONE not in text
    assert "already exists" not in text
    assert "DETAIL" not in text


def test_a_not_null_violation_is_logged_by_its_column_not_the_failing_row(crew_member: CrewMember) -> None:
    error = person_without_given_name(crew_member)

    text = formatted("could not save a person", exc_info=exc_info_of(error))

    assert "psycopg.errors.NotNullViolation" in text
    assert "23502" in text
    assert "given_name" in text
    assert "care_person" in text
    for planted in (FAMILY_NAME, PHONE, "1987-03-14", "Failing row"):
        assert planted not in text


def test_a_message_that_quotes_the_error_loses_the_quote() -> None:
    """As Celery writes a task's failure: the exception's repr inside the message itself."""
    error = duplicate_phone()

    with_traceback = formatted(
        "Task %(name)s[%(id)s] raised unexpected: %(exc)s",
        ({"name": "apps.example", "id": "1", "exc": repr(error)},),
        exc_info_of(error),
    )
    without_traceback = formatted("could not record the preference: %s", (error,))

    for text in (with_traceback, without_traceback):
        assert "preference_phone" in text
        assert PHONE not in text
        assert "already exists" not in text
    assert " Task apps.example[1] raised unexpected: django.db.utils.IntegrityError" in with_traceback


def test_an_error_raised_from_a_database_error_does_not_repeat_its_text() -> None:
    error = duplicate_phone()
    try:
        raise RuntimeError(f"saving failed: {error}") from error
    except RuntimeError:
        info = sys.exc_info()
        assert info[0] is not None and info[1] is not None
        text = formatted("reminder could not be sent", exc_info=(info[0], info[1], info[2]))

    assert "RuntimeError: saving failed:" in text
    assert "The above exception was the direct cause of the following exception:" in text
    assert "preference_phone" in text
    assert PHONE not in text


def test_other_exceptions_are_written_as_ever() -> None:
    try:
        raise ValueError("reminder 42 has no step")
    except ValueError:
        info = sys.exc_info()
        assert info[0] is not None and info[1] is not None
        exc_info: ExcInfo = (info[0], info[1], info[2])
    records = [
        logging.getLogger("x").makeRecord("x", logging.ERROR, __file__, 1, "failed %s", ("x",), exc_info)
        for _ in range(2)
    ]
    records[1].created, records[1].msecs = records[0].created, records[0].msecs

    text = configured_formatter().format(records[0])

    assert text == logging.Formatter(LOGGING["formatters"]["plain"]["format"]).format(records[1])
    assert "ValueError: reminder 42 has no step" in text


def test_a_database_that_cannot_be_reached_is_named_in_the_log() -> None:
    """No SQLSTATE, no data: the message (host, port, why) is what tells an outage apart."""
    with pytest.raises(psycopg.OperationalError) as raised:
        psycopg.connect(host="127.0.0.1", port=free_port(), dbname="tandem", connect_timeout=5)
    assert raised.value.sqlstate is None

    text = formatted("could not reach the database", exc_info=exc_info_of(raised.value))

    assert str(raised.value).splitlines()[0] in text
    assert "no SQLSTATE" in text
