"""Nudges after writes of synced records: at once, then at most one per scope per window."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from apps.sync.nudges import CoalescingNudger
from tests.care.factories import pushed
from tests.conftest import CrewMember, make_crew_member
from tests.live import AsgiServer
from tests.realtime.client import authenticated_socket, receive, send
from tests.sync.helpers import encounter_fields


class Sent:
    """What a nudger sent, and when (the boundary to Redis; the live test below crosses it)."""

    def __init__(self, *, fail_first: int = 0) -> None:
        self.sends: list[tuple[float, list[str]]] = []
        self.fail_first = fail_first
        self.changed = threading.Condition()

    async def __call__(self, scopes: list[str]) -> None:
        with self.changed:
            if self.fail_first:
                self.fail_first -= 1
                raise ConnectionError("redis went away")
            self.sends.append((time.monotonic(), scopes))
            self.changed.notify_all()

    def wait_for(self, count: int, timeout: float = 2.0) -> list[tuple[float, list[str]]]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.sends) >= count, timeout), self.sends
            return list(self.sends)


# Wide enough that "at once" and "at the window's end" stay apart on a machine busy with
# other work, where a thread may wait a few hundred milliseconds for its turn.
WINDOW = 1.0


def test_a_scope_is_nudged_at_once_then_once_more_at_the_end_of_its_window() -> None:
    sent = Sent()
    nudger = CoalescingNudger(window_seconds=WINDOW, send=sent)

    started = time.monotonic()
    nudger.nudge(["unit", "case-managers"])
    [(first_at, first)] = sent.wait_for(1)
    for _ in range(5):  # a burst of pushes into the same unit
        nudger.nudge(["unit"])
        time.sleep(0.01)

    sends = sent.wait_for(2, timeout=3 * WINDOW)
    time.sleep(1.2 * WINDOW)  # nothing more comes of the burst

    assert first == ["unit", "case-managers"] and first_at - started < WINDOW / 2
    assert [scopes for _at, scopes in sent.sends] == [["unit", "case-managers"], ["unit"]]
    assert 0.95 * WINDOW <= sends[1][0] - first_at < 2 * WINDOW  # at the window's end, not before

    nudger.nudge(["unit"])  # quiet for longer than the window: at once again
    [*_, (again_at, again)] = sent.wait_for(3)
    assert again == ["unit"] and again_at - sends[1][0] >= WINDOW


def test_scopes_are_held_each_from_its_own_last_nudge() -> None:
    sent = Sent()
    nudger = CoalescingNudger(window_seconds=WINDOW, send=sent)

    nudger.nudge(["a"])
    [(a_at, _)] = sent.wait_for(1)
    time.sleep(0.2 * WINDOW)
    nudged_at = time.monotonic()
    nudger.nudge(["b"])  # b was never nudged: at once, although a was nudged just now
    nudger.nudge(["a"])  # held until a's window ends
    sends = sent.wait_for(3, timeout=3 * WINDOW)

    assert [scopes for _at, scopes in sends] == [["a"], ["b"], ["a"]]
    assert sends[1][0] - nudged_at < WINDOW / 2  # not held to a's window's end, 0.8 windows on
    assert sends[2][0] - a_at >= 0.95 * WINDOW


def test_a_window_of_zero_nudges_at_every_write() -> None:
    sent = Sent()
    nudger = CoalescingNudger(window_seconds=0, send=sent)

    for _ in range(4):
        nudger.nudge(["unit"])

    assert [scopes for _at, scopes in sent.wait_for(4)] == [["unit"]] * 4


def test_a_failed_send_is_logged_and_later_nudges_still_go(caplog: pytest.LogCaptureFixture) -> None:
    sent = Sent(fail_first=1)
    nudger = CoalescingNudger(window_seconds=0, send=sent)

    nudger.nudge(["unit"])
    nudger.nudge(["unit"])

    assert [scopes for _at, scopes in sent.wait_for(1)] == [["unit"]]
    assert "feed nudge of 1 scopes failed" in caplog.text


@pytest.mark.django_db(transaction=True)
@pytest.mark.live
def test_a_burst_of_pushes_reaches_a_connected_colleague_in_full(
    asgi: AsgiServer, crew_member: CrewMember, program: Any
) -> None:
    colleague = make_crew_member(program, unit=crew_member.unit)
    with authenticated_socket(asgi.ws_url, colleague.token) as socket:
        send(socket, {"type": "feed.subscribe", "cursor": None})
        assert receive(socket)["entries"] == []

        pushed_ids = []
        for _ in range(6):  # six pushes, each its own transaction, well within one window
            record_id = uuid.uuid4()
            result = pushed(crew_member, "care.encounter", encounter_fields(crew_member), record_id=record_id)
            assert result["status"] == "applied", result
            pushed_ids.append(str(record_id))
        last_pushed_at = time.monotonic()

        received: list[str] = []
        while set(received) != set(pushed_ids):
            message = receive(socket, timeout=2)
            assert message["type"] == "feed.entries", message
            received += [entry["id"] for entry in message["entries"]]

    assert sorted(received) == sorted(pushed_ids)  # each once, none lost
    assert time.monotonic() - last_pushed_at < 1.5
