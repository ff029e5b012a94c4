"""The real WatermelonDB sync (npm @nozbe/watermelondb, in Node) against the real server."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from apps.care.models import ClinicalNote, Encounter
from apps.sync.models import Conflict, Mutation, MutationStatus
from tests.care.factories import encounter
from tests.conftest import CrewMember, make_crew_member
from tests.live import AsgiServer, asgi_server

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

PROJECT = Path(__file__).resolve().parent / "watermelon"


def node_project() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is required for the WatermelonDB test (install nodejs and npm).")
    if not (PROJECT / "node_modules" / "@nozbe" / "watermelondb").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is required to install the WatermelonDB test's packages.")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--prefix", str(PROJECT)], check=True, timeout=300)
    return node


def run_sync_test(base_url: str, tablet_a: CrewMember, tablet_b: CrewMember, **env: str) -> dict[str, Any]:
    """Run sync_test.js against the server at ``base_url``, tablet A and B of one unit (A's
    unit), with these further variables; what it printed last, once it passed."""
    node = node_project()
    pair = {
        "BASE_URL": base_url,
        "TOKEN_A": tablet_a.token,
        "TOKEN_B": tablet_b.token,
        "UNIT_ID": str(tablet_a.unit.pk),
    }
    run = subprocess.run(
        [node, "sync_test.js"],
        cwd=PROJECT,
        env={"PATH": str(Path(node).parent), **pair, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    summary: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return summary


def test_watermelondb_syncs_without_losing_or_echoing_anything(asgi: AsgiServer, crew_member: CrewMember) -> None:
    teammate = make_crew_member(crew_member.unit.program, unit=crew_member.unit)
    preseeded = encounter(make_crew_member(crew_member.unit.program, unit=crew_member.unit), location="preseeded")

    summary = run_sync_test(
        asgi.http_url,
        crew_member,
        teammate,
        DEVICE_A=str(crew_member.device.pk),
        PRESEEDED_ID=str(preseeded),
    )

    encounter_id = uuid.UUID(summary["encounterId"])
    # Created once each, by the tablet that made them, never duplicated.
    assert Encounter.objects.filter(pk=encounter_id, created_by=crew_member.user).count() == 1
    assert ClinicalNote.objects.get(pk=summary["noteId"]).body == "Draft note."
    # The rejected record is kept in quarantine, visible, not applied.
    orphan = Mutation.objects.get(record_id=summary["orphanId"])
    assert (orphan.status, orphan.error_code) == (MutationStatus.QUARANTINED, "parent_not_found")
    assert not ClinicalNote.objects.filter(pk=summary["orphanId"]).exists()
    # Same-field edits: the first stands, the second is kept as a conflict.
    assert Encounter.objects.get(pk=preseeded).assessment == "A: calm now."
    same_field = Conflict.objects.get(record_id=preseeded)
    assert (same_field.field, same_field.device_value, same_field.user) == (
        "assessment",
        "B: still agitated.",
        teammate.user,
    )
    # The delete is soft, and B's edit that met it is kept as a conflict rather than lost.
    deleted = Encounter.objects.get(pk=encounter_id)
    assert deleted.is_deleted and deleted.location == "Lenox Ave"
    kept = Conflict.objects.get(record_id=encounter_id, kind="edit_vs_delete")
    assert kept.device_value == "B: moved to clinic"
    # An edit made before the delete, in one row with the flag, is kept with the deleted record.
    edited_then_deleted = Encounter.objects.get(pk=summary["editedThenDeletedId"])
    assert (edited_then_deleted.assessment, edited_then_deleted.is_deleted) == ("Written before the delete.", True)
    # The note a revoked tablet handed over is kept for review and applies nowhere.
    handed_over = Mutation.objects.get(record_id=summary["lastNoteId"])
    assert (handed_over.status, handed_over.error_code) == (MutationStatus.QUARANTINED, "device_revoked")
    assert handed_over.payload["fields"]["body"] == "Written in the subway."
    assert not ClinicalNote.objects.filter(pk=summary["lastNoteId"]).exists()


def test_watermelondb_takes_a_first_sync_in_parts_and_loses_nothing_written_between_them(
    django_db_setup: None, live_server_logs: Path, crew_member: CrewMember
) -> None:
    teammate = make_crew_member(crew_member.unit.program, unit=crew_member.unit)
    writer = make_crew_member(crew_member.unit.program, unit=crew_member.unit)
    preseeded = [str(encounter(writer)) for _ in range(5)]

    with asgi_server(live_server_logs, name="web-parts", SYNC_WATERMELON_FIRST_SYNC_PART="2") as server:
        summary = run_sync_test(
            server.http_url,
            crew_member,
            teammate,
            SCENARIO="first-sync-in-parts",
            PRESEEDED_IDS=",".join(preseeded),
        )

    # Five records (six, when B's falls in A's snapshot after its first part) in parts of two.
    assert summary["partsOfA"][:2] == [True, True] and summary["recordsPerPull"][0] == 2, summary
    assert max(summary["recordsPerPull"]) == 2, summary
    assert Encounter.objects.filter(pk=summary["writtenMeanwhile"], created_by=teammate.user).count() == 1


def test_watermelondb_edits_are_merged_against_what_the_app_holds(asgi: AsgiServer, crew_member: CrewMember) -> None:
    """A colleague's value the app pulled while it had changed the record is no conflict for
    its next edit; one it kept its own value over still is (sync_test.js, heldVersions)."""
    teammate = make_crew_member(crew_member.unit.program, unit=crew_member.unit)
    preseeded = encounter(make_crew_member(crew_member.unit.program, unit=crew_member.unit), location="Lenox Ave")

    summary = run_sync_test(
        asgi.http_url,
        crew_member,
        teammate,
        SCENARIO="held-versions",
        PRESEEDED_ID=str(preseeded),
    )

    assert (summary["locationShownToA"], summary["locationEdit"]) == ("B: 125th St", ["applied"])
    assert (summary["assessmentShownToA"], summary["rewrite"]) == ("A: tearful, denies SI.", ["conflict"])
    stored = Encounter.objects.get(pk=preseeded)
    assert (stored.location, stored.assessment) == (
        "Lenox Ave & 116th St",
        "B: endorses SI with plan; do not leave alone.",
    )
    kept = Conflict.objects.get(record_id=preseeded)
    assert (kept.field, kept.device_value) == ("assessment", "A: tearful, denies SI. Calm at departure.")


def test_watermelondb_deletes_by_id_apply_when_seen_and_conflict_with_an_edit_pulled_after_them(
    asgi: AsgiServer, crew_member: CrewMember
) -> None:
    """markAsDeleted() sends only ids. A delete of a colleague's record the app pulled and no one
    changed since applies; one made offline before the pull that brought a colleague's edit
    (WatermelonDB passes over a pulled change of a record it holds deleted) meets that edit
    as a conflict (sync_test.js, markedDeleted)."""
    teammate = make_crew_member(crew_member.unit.program, unit=crew_member.unit)
    writer = make_crew_member(crew_member.unit.program, unit=crew_member.unit)
    unchanged, edited = (encounter(writer, location="Lenox Ave") for _ in range(2))

    summary = run_sync_test(
        asgi.http_url,
        crew_member,
        teammate,
        SCENARIO="marked-deleted",
        PRESEEDED_IDS=f"{unchanged},{edited}",
    )

    assert summary == {"unchanged": ["applied"], "pulledWhileDeleted": True, "editedMeanwhile": ["conflict"]}
    assert Encounter.objects.get(pk=unchanged).is_deleted
    kept = Encounter.objects.get(pk=edited)
    assert (kept.is_deleted, kept.location) == (False, "B: moved to clinic")
    assert list(Conflict.objects.values_list("record_id", "kind")) == [(edited, "delete_vs_edit")]
