from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from websockets.sync.client import ClientConnection

from apps.accounts.models import Program, Role
from apps.realtime.services import refresh_device_scopes
from apps.sync import services
from apps.sync.scopes import program_role_scope, unit_scope
from apps.teams import services as teams_services
from apps.teams.models import Unit, UnitMember
from tests.admin_pages import resubmitted
from tests.conftest import CrewMember, make_crew_member
from tests.live import AsgiServer
from tests.realtime.client import authenticated_socket, receive, send

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]


def note_for(member: CrewMember) -> str:
    record_id = uuid.uuid4()
    with transaction.atomic():
        services.record_change(
            program_id=member.unit.program_id,
            record_type="test.note",
            record_id=record_id,
            scopes=[unit_scope(member.unit.pk)],
            data={},
        )
    return str(record_id)


@contextlib.contextmanager
def subscribed_socket(asgi: AsgiServer, member: CrewMember) -> Iterator[ClientConnection]:
    """The member's socket, subscribed to the feed from its start (empty)."""
    with authenticated_socket(asgi.ws_url, member.token) as socket:
        send(socket, {"type": "feed.subscribe", "cursor": None})
        assert receive(socket)["entries"] == []
        yield socket


def move(member: CrewMember, *, to: Unit) -> None:
    UnitMember.objects.filter(user=member.user, unit=member.unit).update(unit=to)


def test_a_member_moved_to_another_unit_follows_the_new_unit_only(
    asgi: AsgiServer, program: Program, crew_member: CrewMember
) -> None:
    old_unit = crew_member.unit
    new_crew = make_crew_member(program)
    with subscribed_socket(asgi, crew_member) as socket:
        with transaction.atomic():
            move(crew_member, to=new_crew.unit)
            refresh_device_scopes(user_id=crew_member.user.pk)
        changed = receive(socket)
        assert changed == {
            "type": "scopes.changed",
            "removed": [unit_scope(old_unit.pk)],
            "added": [unit_scope(new_crew.unit.pk)],
        }

        note_for(crew_member)  # the old unit: no longer theirs
        new_note = note_for(new_crew)
        message = receive(socket)

    assert [entry["id"] for entry in message["entries"]] == [new_note]


def test_a_role_taken_away_in_the_admin_stops_the_users_open_sockets_at_once(
    asgi: AsgiServer, program: Program, superuser_client: Client
) -> None:
    case_manager = make_crew_member(program, role=Role.CASE_MANAGER)
    case_managers = program_role_scope(program.pk, Role.CASE_MANAGER)
    change_url = f"/admin/accounts/user/{case_manager.user.pk}/change/"
    with authenticated_socket(asgi.ws_url, case_manager.token) as socket:
        send(socket, {"type": "feed.subscribe", "cursor": None})
        assert receive(socket)["entries"] == []

        data = resubmitted(superuser_client.get(change_url))
        response = superuser_client.post(change_url, {**data, "memberships-0-role": Role.CLINICIAN.value})
        assert response.status_code == 302

        assert receive(socket) == {"type": "scopes.changed", "removed": [case_managers], "added": []}
        with transaction.atomic():  # a change for the program's case managers: no longer theirs
            services.record_change(
                program_id=program.pk, record_type="test.note", record_id=uuid.uuid4(), scopes=[case_managers], data={}
            )
        own_unit_note = note_for(case_manager)
        message = receive(socket)

    assert [entry["id"] for entry in message["entries"]] == [own_unit_note]


def test_a_socket_that_missed_the_scope_change_message_serves_the_scopes_the_user_has_now(
    asgi: AsgiServer, program: Program, crew_member: CrewMember
) -> None:
    old_unit = crew_member.unit
    new_crew = make_crew_member(program)
    with subscribed_socket(asgi, crew_member) as socket:
        # The move commits with the user's scopes brought up to date, as every change of crew
        # does; the channel layer's message to the socket is lost (it may drop messages).
        with transaction.atomic():
            move(crew_member, to=new_crew.unit)
            services.user_scopes_refresh(user=crew_member.user)
        new_unit_note = note_for(new_crew)
        old_unit_note = note_for(crew_member)  # nudges the socket, still in the old unit's group
        frames: list[dict[str, Any]] = []
        with contextlib.suppress(TimeoutError):  # until the new unit's note comes, if it does
            while new_unit_note not in _delivered(frames):
                frames.append(receive(socket))
            # One more, after the old unit's note in the feed's order: had that been served,
            # it would have come before this one.
            last_note = note_for(new_crew)
            while last_note not in _delivered(frames):
                frames.append(receive(socket))

    assert new_unit_note in _delivered(frames) and last_note in _delivered(frames)
    assert old_unit_note not in _delivered(frames)
    assert {
        "type": "scopes.changed",
        "removed": [unit_scope(old_unit.pk)],
        "added": [unit_scope(new_crew.unit.pk)],
    } in frames


def _delivered(frames: list[dict[str, Any]]) -> list[str]:
    return [entry["id"] for frame in frames for entry in frame.get("entries", [])]


def test_a_crew_place_given_to_someone_else_in_the_admin_stops_the_former_members_sockets_at_once(
    asgi: AsgiServer, program: Program, crew_member: CrewMember, superuser_client: Client
) -> None:
    """An admin may hand a member's place on a crew to someone else by picking the other
    person in that row of the unit's page. The member it was taken from left the unit as
    surely as if the row had been deleted: their open sockets must stop receiving the
    unit's records, though no pull of theirs brings their scopes up to date."""
    successor = make_crew_member(program)
    change_url = f"/admin/teams/unit/{crew_member.unit.pk}/change/"
    with subscribed_socket(asgi, crew_member) as socket:
        data = resubmitted(superuser_client.get(change_url))
        # The unit's only crew row: the member's place.
        place = "memberships-0-user"
        assert data[place] in (str(crew_member.user.pk), [str(crew_member.user.pk)])
        response = superuser_client.post(change_url, {**data, place: str(successor.user.pk)})
        assert response.status_code == 302
        assert UnitMember.objects.filter(unit=crew_member.unit).get().user_id == successor.user.pk

        unit_note = note_for(crew_member)  # the unit's, no longer theirs
        frames: list[dict[str, Any]] = []
        with contextlib.suppress(TimeoutError):
            while True:
                frames.append(receive(socket, timeout=1))

    assert unit_note not in _delivered(frames)
    assert {"type": "scopes.changed", "removed": [unit_scope(crew_member.unit.pk)], "added": []} in frames


def test_a_crew_change_committed_while_the_channel_layer_is_down_stands_without_a_fault(
    settings: Any, program: Program, crew_member: CrewMember
) -> None:
    """Telling open sockets of a change of crew only hurries them (a feed read finds the
    user's scopes as stored): a channel layer out of reach must not make the committed change
    look failed to whoever made it (the admin, a roster import), who would make it again."""
    new_crew = make_crew_member(program)
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": "redis://127.0.0.1:1/0", "socket_connect_timeout": 1}]},
        }
    }

    teams_services.unit_member_add(unit=new_crew.unit, user=crew_member.user)

    assert UnitMember.objects.filter(unit=new_crew.unit, user=crew_member.user).exists()
    assert unit_scope(new_crew.unit.pk) in services.user_scopes_refresh(user=crew_member.user)
