from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction

from apps.accounts.models import Program
from apps.common import bulk

pytestmark = pytest.mark.django_db


def _prepared(statement_start: str) -> list[tuple[str, int]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT statement, custom_plans + generic_plans FROM pg_prepared_statements WHERE statement LIKE %s",
            [statement_start + "%"],
        )
        return cursor.fetchall()


def test_a_batch_statement_run_often_is_prepared_on_its_connection() -> None:
    for n in range(7):
        bulk.insert([Program(slug=f"p{n}", name=f"Program {n}")])

    prepared = _prepared('INSERT INTO "accounts_program"')

    assert len(prepared) == 1
    assert prepared[0][1] == 2  # prepared after five runs: the sixth and seventh use it
    assert Program.objects.filter(slug__startswith="p").count() == 7


def test_a_batch_statement_the_database_refuses_raises_djangos_error() -> None:
    bulk.insert([Program(slug="north", name="North")])

    with pytest.raises(IntegrityError), transaction.atomic():
        bulk.insert([Program(slug="north", name="North again")])

    assert list(Program.objects.filter(slug="north").values_list("name", flat=True)) == ["North"]


def test_any_of_finds_exactly_the_values_given_whatever_their_type() -> None:
    programs = [Program.objects.create(slug=f"any{n}", name=f'Any {n}, "quoted" {{braced}}') for n in range(4)]
    wanted = programs[:3]

    by_id = Program.objects.filter(pk__in=bulk.any_of([program.pk for program in wanted], "uuid"))
    by_name = Program.objects.filter(name__in=bulk.any_of([program.name for program in wanted], "text"))
    of_none = Program.objects.filter(pk__in=bulk.any_of([], "uuid"))

    assert set(by_id) == set(wanted)
    assert set(by_name) == set(wanted)
    assert list(of_none) == []
    integers = bulk.any_of([2**40, -3], "bigint")
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT x FROM unnest(%s::bigint[]) AS x WHERE x IN ({integers.sql}) ORDER BY x",  # noqa: S608
            [[2**40, -3, 5], *integers.params],
        )
        assert cursor.fetchall() == [(-3,), (2**40,)]
