"""Settings of follow-ups (apps.followups), all from the environment."""

from __future__ import annotations

from config.env import env_int, env_str

# The periodic sweep that claims due reminders runs this often (seconds).
FOLLOWUPS_SWEEP_SECONDS = env_int("FOLLOWUPS_SWEEP_SECONDS", 30)
# Reminders one sweep claims at most; the next run takes the rest.
FOLLOWUPS_SWEEP_BATCH = env_int("FOLLOWUPS_SWEEP_BATCH", 10_000)
# Reminders claimed per transaction of the sweep; each batch's sends are queued as it commits.
FOLLOWUPS_CLAIM_BATCH = env_int("FOLLOWUPS_CLAIM_BATCH", 2_000)
# A claimed reminder still unsent after this long (its task was lost) is dispatched again;
# sending is idempotent, so a late duplicate task changes nothing.
FOLLOWUPS_REDISPATCH_AFTER_SECONDS = env_int("FOLLOWUPS_REDISPATCH_AFTER_SECONDS", 600)
# Reminders one send task takes (ids only; the chunk is sent in one transaction, its
# notifications created in bulk).
FOLLOWUPS_SEND_CHUNK = env_int("FOLLOWUPS_SEND_CHUNK", 200)
FOLLOWUPS_TASK_QUEUE = env_str("FOLLOWUPS_TASK_QUEUE", "celery")
# Default supervisor margin for a schedule step that does not set its own (minutes).
FOLLOWUPS_OVERDUE_MARGIN_MINUTES = env_int("FOLLOWUPS_OVERDUE_MARGIN_MINUTES", 240)
# Appointment reminders to the person go this long before the appointment.
FOLLOWUPS_APPOINTMENT_LEAD_HOURS = env_int("FOLLOWUPS_APPOINTMENT_LEAD_HOURS", 24)
# Quiet hours for the person (local time of the program) unless their own preference says otherwise.
FOLLOWUPS_PERSON_QUIET_START = env_str("FOLLOWUPS_PERSON_QUIET_START", "21:00")
FOLLOWUPS_PERSON_QUIET_END = env_str("FOLLOWUPS_PERSON_QUIET_END", "08:00")
