"""Key rotation: seal every stored health-information value with the newest key.

    FIELD_ENCRYPTION_KEYS=<new>,<old>  manage.py reseal_health_information
    # then drop <old> from FIELD_ENCRYPTION_KEYS

Safe to run again (values already under the newest key are left alone) and while the
application runs (a value changed meanwhile is not overwritten).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.common import resealing


class Command(BaseCommand):
    help = "Reseal every encrypted health-information value (and registered copies) with the newest key."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=500, help="Rows read and written per transaction.")

    def handle(self, *args: Any, batch_size: int, **options: Any) -> None:
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        total = resealing.ResealCount()
        for model in resealing.models_with_encrypted_fields():
            count = resealing.reseal_model(model, batch_size=batch_size)
            total.add(count)
            columns = ", ".join(field.name for field in resealing.encrypted_fields(model))
            self.stdout.write(
                f"{model._meta.label} ({columns}): {count.resealed} resealed, {count.sealed} sealed from plaintext, "
                f"{count.current} already current, {count.skipped} changed meanwhile"
            )
        for hook in resealing.reseal_hooks():
            resealed = hook()
            total.resealed += resealed
            self.stdout.write(f"{hook.__module__}.{hook.__qualname__}: {resealed} resealed")
        self.stdout.write(
            self.style.SUCCESS(
                f"Done: {total.resealed} resealed, {total.sealed} sealed from plaintext, "
                f"{total.current} already current, {total.skipped} changed meanwhile."
            )
        )
