from __future__ import annotations

import os
from typing import Any

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.development")

app = Celery("tandem")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.setup_logging.connect
def log_through_settings(**kwargs: Any) -> None:
    """The worker and beat log through settings.LOGGING and nothing else.

    With a receiver of this signal Celery configures no logging of its own. Without one it
    gives its task loggers (``celery.utils.log.get_task_logger``) a handler and format of its
    own, which do not propagate: their lines bypassed the console handler's formatter, which
    keeps a database error's text (quoting rows of health information) out of the log.
    The level is LOG_LEVEL's, whatever the command line's ``--loglevel`` says.
    """
    from django.conf import settings
    from django.utils.log import configure_logging

    configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)
