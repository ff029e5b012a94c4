from __future__ import annotations

import factory

from apps.teams.models import ResponseModel, Unit, UnitMember, UnitStatus, Zone
from tests.accounts.factories import ProgramFactory, UserFactory


class ZoneFactory(factory.django.DjangoModelFactory[Zone]):
    class Meta:
        model = Zone

    program = factory.SubFactory(ProgramFactory)
    code = factory.Sequence(lambda n: f"Z{n:03d}")
    name = factory.LazyAttribute(lambda zone: f"Zone {zone.code}")


class UnitFactory(factory.django.DjangoModelFactory[Unit]):
    class Meta:
        model = Unit

    program = factory.SubFactory(ProgramFactory)
    call_sign = factory.Sequence(lambda n: f"BH-{n:03d}")
    response_model = ResponseModel.EMT_CLINICIAN
    status = UnitStatus.AVAILABLE


class UnitMemberFactory(factory.django.DjangoModelFactory[UnitMember]):
    class Meta:
        model = UnitMember

    unit = factory.SubFactory(UnitFactory)
    user = factory.SubFactory(UserFactory)
    is_on_shift = True
