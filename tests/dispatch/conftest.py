from __future__ import annotations

import pytest

from apps.accounts.models import Program, Role
from tests.conftest import CrewMember
from tests.dispatch.factories import make_staff, seed_default_triage_policy


@pytest.fixture(autouse=True)
def default_triage_policy(db: None) -> None:
    seed_default_triage_policy()


@pytest.fixture
def dispatcher(program: Program) -> CrewMember:
    return make_staff(program, Role.DISPATCHER)


@pytest.fixture
def supervisor(program: Program) -> CrewMember:
    return make_staff(program, Role.SUPERVISOR)
