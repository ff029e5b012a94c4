"""No task of the project keeps its result in Redis.

A failed task's result is its exception and traceback, whose text can quote a database row;
nothing in the product reads a task's result, so none is stored (tests that read one ask for
it). What reaches the logs is redacted (apps.common.logs); Redis would have kept it raw."""

from __future__ import annotations

from config.celery import app


def test_no_task_of_the_project_stores_its_result() -> None:
    app.loader.import_default_modules()
    ours = {name: task for name, task in app.tasks.items() if name.startswith("apps.")}

    assert len(ours) >= 10
    assert [name for name, task in sorted(ours.items()) if not task.ignore_result] == []
