"""Hostile input against the published schema: property-based requests, valid and invalid,
to every operation of a real server must never produce a 5xx nor a response that
contradicts the schema."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode

from tests.conftest import CrewMember
from tests.live import AsgiServer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

# Per operation and mode: 10 keep the suite within its time on two cores (20 took 87 s there,
# 14 about 47 s in a slow spell); the sync endpoints get a deeper look of their own
# (tests/sync/test_hostile_input.py).
EXAMPLES_PER_OPERATION_AND_MODE = 10
CHECKS = SchemathesisConfig.from_dict(
    {
        # Every request carries the test's own token, so a case whose invalid part is the
        # Authorization header would reach the server valid. That every route refuses a
        # missing or unknown token is shown by tests/test_permission_matrix.py.
        "generation": {"with-security-parameters": False},
        "checks": {
            # A request the schema allows may still break a rule no schema states (latitude
            # without longitude, a program the caller does not work for): a 400 naming the
            # field is the right answer to it.
            "positive_data_acceptance": {"enabled": False},
            # Refusals, including a sync request in a protocol the server does not speak (426),
            # which it answers before reading the body.
            "negative_data_rejection": {
                "expected-statuses": [
                    *("400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "426", "429")
                ]
            },
        },
    }
)


def takes_input(operation: Any) -> bool:
    parameters = (operation.path_parameters, operation.query, operation.headers, operation.cookies)
    return any(len(parameter_set) for parameter_set in parameters) or len(operation.body) > 0


def test_api_survives_hostile_input(
    asgi: AsgiServer, crew_member: CrewMember, capsys: pytest.CaptureFixture[str]
) -> None:
    headers = {"Authorization": f"Bearer {crew_member.token}"}
    schema = schemathesis.openapi.from_url(f"{asgi.http_url}/api/schema/?format=json", config=CHECKS, headers=headers)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    cases_run: dict[str, int] = {}

    def run_examples(operation: Any, mode: GenerationMode) -> None:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION_AND_MODE,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            cases_run[operation.label] = cases_run.get(operation.label, 0) + 1
            case.call_and_validate(base_url=asgi.http_url, headers=headers)

        check()

    for operation in operations:
        run_examples(operation, GenerationMode.POSITIVE)
        if takes_input(operation):  # an operation that takes nothing has nothing to make invalid
            run_examples(operation, GenerationMode.NEGATIVE)

    with capsys.disabled():
        print(f"\nschemathesis: {sum(cases_run.values())} cases over {len(cases_run)} operations")
    assert len(cases_run) == len(operations) >= 8
