from __future__ import annotations

from typing import Any

from rest_framework import serializers

from apps.accounts.models import Device, DevicePlatform, Membership, User
from apps.common.api.serializers import StrictSerializer


class DeviceRegisterInputSerializer(StrictSerializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=256, trim_whitespace=False, style={"input_type": "password"})
    device_name = serializers.CharField(max_length=100)
    platform = serializers.ChoiceField(choices=DevicePlatform.choices)


class DeviceRevokeInputSerializer(StrictSerializer):
    reason = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class DeviceSerializer(serializers.ModelSerializer[Device]):
    class Meta:
        model = Device
        fields = ["id", "name", "platform", "created_at", "last_seen_at", "revoked_at"]


class DeviceOwnerSerializer(serializers.ModelSerializer[User]):
    class Meta:
        model = User
        fields = ["id", "username", "first_name", "last_name"]


class ProgramDeviceSerializer(serializers.ModelSerializer[Device]):
    """A device as a supervisor sees it: whose it is and whether it is still trusted."""

    user = DeviceOwnerSerializer(read_only=True)

    class Meta:
        model = Device
        fields = ["id", "user", "name", "platform", "created_at", "last_seen_at", "revoked_at", "revoke_reason"]


class IssuedTokenSerializer(serializers.Serializer[Any]):
    device = DeviceSerializer()
    token = serializers.CharField(help_text="Shown once; send as `Authorization: Bearer <token>`.")
    expires_at = serializers.DateTimeField()


class MembershipSerializer(serializers.ModelSerializer[Membership]):
    program: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = Membership
        fields = ["program", "role"]


class MeSerializer(serializers.ModelSerializer[User]):
    memberships = MembershipSerializer(many=True, read_only=True)
    units = serializers.SerializerMethodField()

    class Meta:
        model = User
        fields = ["id", "username", "first_name", "last_name", "memberships", "units"]

    def get_units(self, user: User) -> list[str]:
        # A place on a crew counts only in a program the user still works for, as every crew
        # rule reads it (apps.teams.selectors.crewed_unit_ids; accounts sits below teams).
        programs = user.memberships.values("program_id")
        crews = user.unit_memberships.filter(unit__program__in=programs)
        return [str(unit_id) for unit_id in crews.values_list("unit_id", flat=True)]
