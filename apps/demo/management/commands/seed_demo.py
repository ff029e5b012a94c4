"""python manage.py seed_demo — build (or complete) the demo data and list its logins."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.accounts.models import User
from apps.demo.services import ADMIN_USERNAME, DEFAULT_DEMO_PASSWORD, DemoLogin, admin_one_time_codes, demo_seed

# Staff whose admin backup codes are printed: one of each kind is enough to try the workspace.
STAFF_WITH_PRINTED_CODES = (ADMIN_USERNAME, "nyc.casemanager", "nyc.supervisor", "bos.casemanager")


def base_url() -> str:
    """Where `make run` serves (the Procfile's TANDEM_HOST / TANDEM_PORT)."""
    host = os.environ.get("TANDEM_HOST", "") or "127.0.0.1"
    if host in {"0.0.0.0", "::"}:  # noqa: S104 — a listen-everywhere address is reached via loopback
        host = "127.0.0.1"
    return f"http://{host}:{os.environ.get('TANDEM_PORT', '') or '8000'}"


class Command(BaseCommand):
    help = "Create the demo programs, zones, units, crews and logins. Safe to run again: creates nothing twice."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--reset-passwords",
            action="store_true",
            help="set every existing demo user's password to the demo password again",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        configured = os.environ.get("DEMO_PASSWORD", "")
        if not configured and not settings.DEBUG:
            # The default is published in the README; a server reachable by others must not
            # get a superuser with it.
            raise CommandError("Set DEMO_PASSWORD: outside DEBUG the published default demo password is refused.")
        try:
            logins = demo_seed(password=configured or DEFAULT_DEMO_PASSWORD, reset_passwords=options["reset_passwords"])
        except ValidationError as error:
            raise CommandError(f"DEMO_PASSWORD is too weak: {' '.join(error.messages)}") from error
        self.print_summary(logins, password_from_env=bool(configured))
        self.stdout.write(
            "Admin sign-in also asks for a one-time code: pick the device 'demo backup codes' and use"
            " one of the user's codes below, each once (new ones on every seed_demo)."
        )
        for user in User.objects.filter(is_staff=True, username__in=STAFF_WITH_PRINTED_CODES).order_by("username"):
            self.stdout.write(f"  {user.username:<16} {', '.join(admin_one_time_codes(user))}")

    def print_summary(self, logins: list[DemoLogin], *, password_from_env: bool) -> None:
        url = base_url()
        socket_url = url.replace("http://", "ws://", 1)
        write = self.stdout.write
        users = len({login.username for login in logins})
        programs = len({login.program for login in logins})
        write(self.style.SUCCESS(f"Demo data ready: {programs} programs, {users} demo users."))
        write("")
        write(f"  Admin          {url}/admin/")
        write(f"  API docs       {url}/api/docs/")
        write(f"  Health         {url}/healthz")
        write(f"  Device socket  {socket_url}/ws/v1/device/")
        write("")
        columns = ("username", "role", "program", "unit")
        rows = [(login.username, login.role, login.program, login.unit or "-") for login in logins]
        widths = [max(len(row[index]) for row in [columns, *rows]) for index in range(len(columns))]
        for row in [columns, *rows]:
            write("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        write("")
        if password_from_env:
            write("Password of every demo login: the value of DEMO_PASSWORD.")
        else:
            write(f"Password of every demo login: {DEFAULT_DEMO_PASSWORD}  (demo only; set DEMO_PASSWORD to change)")
        write("Sign in a device: POST /api/v1/auth/devices/ with username, password, device_name, platform.")
