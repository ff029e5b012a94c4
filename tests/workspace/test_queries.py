from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from apps.accounts.models import Program
from apps.notifications import selectors
from apps.notifications.models import Notification
from tests.accounts.factories import ProgramFactory
from tests.workspace.scenario import workday
from tests.workspace.test_admin import changelist_url


def changelist_queries(client: Client) -> dict[str, tuple[int, int]]:
    """Per registered admin: (rows listed, queries run) for its changelist."""
    measured = {}
    for model in admin.site._registry:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(changelist_url(model))
        assert response.status_code == 200, model._meta.label
        measured[model._meta.label] = (len(response.context["cl"].result_list), len(queries))
    return measured


def test_no_changelist_runs_a_query_per_row(superuser_client: Client, program: Program) -> None:
    workday(program)
    few = changelist_queries(superuser_client)
    for number in range(4):
        workday(ProgramFactory.create(slug=f"program-{number}"))

    many = changelist_queries(superuser_client)

    grown = {label for label in many if many[label][0] > few[label][0]}
    # The domain lists the workspace is for must have grown, or the comparison proves nothing.
    assert grown >= {
        "followups.FollowUpStep",
        "care.Referral",
        "care.Encounter",
        "dispatch.Incident",
        "dispatch.Assignment",
        "sync.Conflict",
        "teams.Unit",
        "accounts.User",
    }, grown
    per_row = {label: (few[label], many[label]) for label in grown if many[label][1] != few[label][1]}
    assert per_row == {}, "(rows, queries) with few rows and with more: " + repr(per_row)


def test_the_notification_lists_delivery_column_says_what_the_delivery_summary_says(
    superuser_client: Client, program: Program
) -> None:
    workday(program)
    notification_admin: Any = admin.site._registry[Notification]
    request = superuser_client.get(changelist_url(Notification)).wsgi_request

    listed = list(notification_admin.get_queryset(request))

    assert listed, "the workday raises alerts, so there are notifications to list"
    for notification in listed:
        expected = selectors.delivery_summary(notification=notification).describe()
        assert notification_admin.delivery(notification) == expected
