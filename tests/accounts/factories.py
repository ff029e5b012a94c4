from __future__ import annotations

from typing import Any

import factory

from apps.accounts import services
from apps.accounts.models import Device, DevicePlatform, Membership, Program, Role, User

PASSWORD = "correct horse battery staple"


class ProgramFactory(factory.django.DjangoModelFactory[Program]):
    class Meta:
        model = Program
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda n: f"program-{n}")
    name = factory.LazyAttribute(lambda program: program.slug.replace("-", " ").title())


class UserFactory(factory.django.DjangoModelFactory[User]):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @classmethod
    def _after_postgeneration(cls, instance: User, create: bool, results: Any = None) -> None:
        if create:
            instance.save()


class MembershipFactory(factory.django.DjangoModelFactory[Membership]):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    program = factory.SubFactory(ProgramFactory)
    role = Role.CLINICIAN


class DeviceFactory(factory.django.DjangoModelFactory[Device]):
    class Meta:
        model = Device

    user = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"Tablet {n}")
    platform = DevicePlatform.ANDROID


def device_with_token(user: User, name: str = "Tablet") -> tuple[Device, str]:
    """A registered device of the user and its raw token, as the sign-in endpoint makes them."""
    device, _token, raw_token = services.device_register(user=user, name=name, platform=DevicePlatform.ANDROID)
    return device, raw_token
