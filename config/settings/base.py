"""Settings shared by every environment; everything that varies comes from the environment."""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent.parent

# Development-only fallbacks, published with the source: production settings refuse to start
# without real values, and refuse these.
DEVELOPMENT_SECRET_KEY = "insecure-development-key-not-for-production"  # noqa: S105 — public by design
DEVELOPMENT_FIELD_ENCRYPTION_KEY = "ZGV2ZWxvcG1lbnQtb25seS1rZXktMDAwMDAwMDAwMDA="
SECRET_KEY = env_str("SECRET_KEY", DEVELOPMENT_SECRET_KEY)
DEBUG = env_bool("DEBUG", False)
# Fernet keys for health information encrypted at rest, newest first (see README "Encryption
# at rest").
FIELD_ENCRYPTION_KEYS = env_str("FIELD_ENCRYPTION_KEYS", DEVELOPMENT_FIELD_ENCRYPTION_KEY).split(",")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_celery_beat",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "csp",
    # Ours, from the bottom of the dependency stack up (see DESIGN.md section 4).
    "apps.common",
    "apps.accounts",
    "apps.audit",
    "apps.teams",
    "apps.sync",
    "apps.realtime",
    "apps.notifications",
    "apps.dispatch",
    "apps.care",
    "apps.directory",
    "apps.followups",
    "apps.demo",
    "apps.workspace",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Outside the rest, so the API's error answers of every later middleware are marked too.
    "apps.common.middleware.NoStoreAPIMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Before anything reads the user: a session past its absolute lifetime is signed out.
    "apps.accounts.sessions.SessionLifetimeMiddleware",
    "django_otp.middleware.OTPMiddleware",
    # After the user is known: the admin's pages on the clock of the user's program.
    "apps.workspace.middleware.WorkspaceTimeZoneMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, so it sees the outcome of every authentication attempt.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    # First: refuses sign-in while an account or address is locked out.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Lock an account out after repeated failed sign-ins (admin and device sign-in alike).
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = env_int("AXES_COOLOFF_MINUTES", 30) / 60  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False
AXES_LOCKOUT_CALLABLE = "apps.accounts.lockout.lockout_response"
# Masked in the form data the lockout keeps of each failed sign-in (the password always is):
# with a mistyped password, the admin's one-time code may be a printed backup code not used yet.
AXES_SENSITIVE_PARAMETERS = ["username", "ip_address", "otp_token"]

# Staff are signed out of the admin after this long without a request.
SESSION_COOKIE_AGE = env_int("SESSION_IDLE_TIMEOUT_SECONDS", 15 * 60)
SESSION_SAVE_EVERY_REQUEST = True
# ...and however active, this long after they signed in (apps/accounts/sessions.py).
SESSION_ABSOLUTE_TIMEOUT_SECONDS = env_int("SESSION_ABSOLUTE_TIMEOUT_SECONDS", 12 * 3600)
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
# The admin asks staff for a one-time code (TOTP app or printed backup codes).
ADMIN_REQUIRE_TWO_FACTOR = env_bool("ADMIN_REQUIRE_TWO_FACTOR", True)
OTP_TOTP_ISSUER = "Tandem"

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
        "base-uri": ["'self'"],
        "object-src": ["'none'"],
    }
}

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "config" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# DATABASE_URL and REDIS_URL are set by `config/embedded.py` when not configured.
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", "postgresql://postgres@localhost:5432/tandem"),
        conn_health_checks=True,
    )
}
# Each request of an ASGI process runs its database work in a thread of its own, so a
# thread's persistent connection would die with the request: connections are pooled per
# process instead (psycopg_pool) and kept across requests. Few: a process advances one
# request's Python at a time, and more requests inside their transactions at once only
# contend, for its interpreter lock and the database's CPU (on 2 cores, 4 connections a
# process pushed 10-15 % more mutations per second than 10); the others wait for a turn.
DATABASE_POOL_SIZE = env_int("DATABASE_POOL_SIZE", 4)
if DATABASE_POOL_SIZE > 0:
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": DATABASE_POOL_SIZE,
        "timeout": env_int("DATABASE_POOL_TIMEOUT", 10),
    }
# A statement run five times on a connection is prepared: parsed once, and after five more
# runs PostgreSQL keeps a generic plan for it. Only the batch statements of apps.common.bulk (parameters bound on the
# server, fixed texts) are; the ORM binds values into its SQL text and prepares nothing.
DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = 5
# A request or task thread that hangs inside a transaction leaves its connection idle in
# transaction, holding its locks: a device's push lock (pg_advisory_xact_lock), record locks,
# claimed rows. Every later push of that device would wait for it for ever. PostgreSQL ends
# such a session after this many seconds idle in its transaction (0: never), and the locks go
# with it; the hung thread's transaction is rolled back and its work is retried as any failed
# one. Only time between statements counts: a long statement, a migration or a re-sealing
# batch that keeps the database busy is not cut short. Set when each connection starts
# (libpq's `options`), so web, worker, beat and management commands all have it.
DATABASE_IDLE_IN_TRANSACTION_TIMEOUT = env_int("DATABASE_IDLE_IN_TRANSACTION_TIMEOUT", 60)
if DATABASE_IDLE_IN_TRANSACTION_TIMEOUT < 0:
    raise ImproperlyConfigured("DATABASE_IDLE_IN_TRANSACTION_TIMEOUT must be 0 (off) or a number of seconds.")
_session_options = DATABASES["default"]["OPTIONS"].get("options", "")
DATABASES["default"]["OPTIONS"]["options"] = (
    f"{_session_options} -c idle_in_transaction_session_timeout={DATABASE_IDLE_IN_TRANSACTION_TIMEOUT * 1000}"
).strip()
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / ".data" / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

REDIS_URL = env_str("REDIS_URL", "redis://localhost:6379/0")

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "tandem",
        # One connection pool per process, not per thread (see the class).
        "OPTIONS": {"pool_class": "apps.common.cache.ProcessConnectionPool"},
    }
}

# A device token's life; a websocket lives as long as its token (the channel layer's groups too).
DEVICE_TOKEN_TTL_DAYS = env_int("DEVICE_TOKEN_TTL_DAYS", 30)

# redis-py 8 defaults a pool to 100 connections and a 5 s socket timeout; channels-redis
# holds a blocking read open per consumer, so both defaults break idle and busy sockets.
# Spell the connection out instead of trusting library defaults.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [
                {
                    "address": REDIS_URL,
                    "socket_timeout": None,
                    "socket_connect_timeout": 5,
                    "socket_keepalive": True,
                    "health_check_interval": 30,
                    "max_connections": env_int("CHANNEL_LAYER_MAX_CONNECTIONS", 10_000),
                }
            ],
            "prefix": "tandem:channels",
            "capacity": 1_000,
            "expiry": 60,
            # channels-redis drops a channel from its groups a day after it joined them: a
            # socket open longer (a tablet in a vehicle across shifts) would hear no nudge of
            # its crew's offers, its revocation or its change of crew. Keep it as long as a
            # socket can live.
            "group_expiry": DEVICE_TOKEN_TTL_DAYS * 24 * 3600,
        },
    }
}

CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
# Nothing in the product reads a task's result, and a failed one's is its exception's text,
# which can quote a database row: none is kept unless asked for (tests ask).
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# A task is acknowledged only after it ran, and re-queued if its worker dies mid-task;
# every task is therefore written to be idempotent.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600)}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# The limits travel in each task's message, stamped from the settings of the process that
# queued it (web, beat, a task); the worker's `--time-limit`/`--soft-time-limit` do not override
# them. Change them here, for every process (tests/common/test_time_limits_live.py). Only a task
# sent by name by a process that does not know it carries none: the worker's settings' apply.
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_RESULT_EXPIRES = 3600
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"


def _periodic(task: str, every: float) -> dict[str, object]:
    """A periodic task that reads its work from the database: one whose message waited longer
    than its interval (a minute at least) is dropped, since the next one is on its way and
    nothing is lost. Without it, an hour's worker outage left some 900 five-second sweeps
    queued ahead of the sends on the shared queue.

    django-celery-beat's scheduler keeps "expire_seconds" and drops "expires"; Celery's own
    keeps "expires". The tasks store no result either (nobody reads a sweep's).
    """
    expires = max(every, 60.0)
    return {"task": task, "schedule": every, "options": {"expires": expires, "expire_seconds": int(expires)}}


# Periodic work; the database scheduler picks these up and the admin can adjust them.
CELERY_BEAT_SCHEDULE = {
    "revoke-unseen-devices": _periodic("apps.accounts.tasks.revoke_unseen_devices", 3600.0),
    "prune-rotated-tokens": _periodic("apps.accounts.tasks.prune_rotated_tokens", 24 * 3600.0),
    "clear-ended-sessions": _periodic("apps.accounts.tasks.clear_ended_sessions", 24 * 3600.0),
    "purge-expired-audit-events": _periodic("apps.audit.tasks.purge_expired_audit_events", 86400.0),
    "sync-prune-feed": _periodic("apps.sync.tasks.prune_feed", 86400.0),
    "sync-apply-stranded": _periodic("apps.sync.tasks.apply_stranded_mutations", 60.0),
    "notifications-sweep": _periodic("apps.notifications.tasks.sweep", 5.0),
    # Overdue acknowledgements and missed check-ins; the due times live in the database.
    "dispatch-sweep-deadlines": _periodic(
        "apps.dispatch.tasks.sweep_deadlines", float(env_int("DISPATCH_SWEEP_INTERVAL_SECONDS", 5))
    ),
    "followups-sweep": _periodic(
        "apps.followups.tasks.sweep_due_reminders", float(env_int("FOLLOWUPS_SWEEP_SECONDS", 30))
    ),
}
# Celery's worker and beat configure no logging of their own: they log through LOGGING (below),
# see config/celery.py.

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["apps.accounts.authentication.DeviceTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["apps.common.api.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": [
        "apps.common.api.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PAGINATION_CLASS": "apps.common.api.pagination.StandardPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "apps.common.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_CLASSES": ["apps.accounts.throttling.DeviceRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "device": env_str("THROTTLE_DEVICE_RATE", "1200/min"),
        "login": env_str("THROTTLE_LOGIN_RATE", "10/min"),
        # Reads of the API's schema and docs page per address (apps/accounts/api/docs.py).
        "schema": env_str("THROTTLE_SCHEMA_RATE", "30/min"),
    },
    # Throttles count per REMOTE_ADDR, as the lockout and the audit trail do: uvicorn already
    # sets it from the X-Forwarded-For of a trusted proxy. Left unset, DRF reads that header
    # as the client sent it, and a sign-in that writes a new one each time is never throttled.
    "NUM_PROXIES": 0,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

# The API's schema and docs page for anyone, or only for signed-in devices and staff: the
# latter in production; development turns it on.
API_SCHEMA_PUBLIC = env_bool("API_SCHEMA_PUBLIC", False)

SPECTACULAR_SETTINGS = {
    "TITLE": "Tandem API",
    "DESCRIPTION": "Backend for mobile mental-health crisis response.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/api/v[0-9]+",
    # Who may read the schema and its docs page: apps/accounts/api/docs.py (API_SCHEMA_PUBLIC).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "ReferralStatusEnum": "apps.care.models.ReferralStatus",
        "ReferralTaskStatusEnum": "apps.care.models.ReferralTaskStatus",
        "FollowUpStepStatusEnum": "apps.followups.models.StepStatus",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "apps.common.api.schema.add_error_responses",
    ],
}

# Largest request body accepted anywhere; batches have their own, smaller limits.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 5 * 1024 * 1024)

# How long a rotated token still works while its successor has not been used (the answer of
# the rotation may have been lost in a tunnel).
DEVICE_TOKEN_ROTATION_GRACE_MINUTES = env_int("DEVICE_TOKEN_ROTATION_GRACE_MINUTES", 60)
DEVICE_REVOKE_UNSEEN_DAYS = env_int("DEVICE_REVOKE_UNSEEN_DAYS", 30)
# How long a revoked device may still hand over the changes it holds (into quarantine).
DEVICE_HANDOVER_DAYS = env_int("DEVICE_HANDOVER_DAYS", 30)
# HIPAA asks for six years of audit records; programs may keep them longer.
AUDIT_RETENTION_DAYS = env_int("AUDIT_RETENTION_DAYS", 6 * 366)
# A websocket that has not authenticated by then is closed.
WEBSOCKET_AUTH_TIMEOUT_SECONDS = env_int("WEBSOCKET_AUTH_TIMEOUT_SECONDS", 10)
# An open websocket checks its token again this often, in case word of a revocation or a
# rotation was lost on the way (it is told at once otherwise).
WEBSOCKET_TOKEN_RECHECK_SECONDS = env_int("WEBSOCKET_TOKEN_RECHECK_SECONDS", 60)
# A connected device re-reads its feed this often even without a nudge (0 turns it off).
FEED_SAFETY_POLL_SECONDS = env_int("FEED_SAFETY_POLL_SECONDS", 30)
# Web processes only: freeze long-lived objects this often so CPython's full collections
# stay short with thousands of sockets (0 = off), and collect fully this often.
# On by default: with thousands of sockets a full collection stalls every one of them for
# 0.3-0.6 s (apps/realtime/gc_policy.py, tests/bench/bench_dispatch.py); 0 turns it off.
WEBSOCKET_GC_FREEZE_SECONDS = env_int("WEBSOCKET_GC_FREEZE_SECONDS", 5)
WEBSOCKET_GC_FULL_COLLECT_SECONDS = env_int("WEBSOCKET_GC_FULL_COLLECT_SECONDS", 3600)

# Dispatch defaults; a program overrides them per priority (dispatch.ResponseTiming).
DISPATCH_ACK_RESEND_SECONDS = env_int("DISPATCH_ACK_RESEND_SECONDS", 60)
DISPATCH_ACK_ESCALATE_SECONDS = env_int("DISPATCH_ACK_ESCALATE_SECONDS", 120)
DISPATCH_CHECKIN_INTERVAL_SECONDS = env_int("DISPATCH_CHECKIN_INTERVAL_SECONDS", 15 * 60)
# A call escalation found no free unit for: how often the sweep looks for one again, and how
# often the supervisors hear again that the call is still waiting.
DISPATCH_NO_UNIT_RETRY_SECONDS = env_int("DISPATCH_NO_UNIT_RETRY_SECONDS", 10)
DISPATCH_NO_UNIT_REALERT_SECONDS = env_int("DISPATCH_NO_UNIT_REALERT_SECONDS", 300)
# A deadline whose action raised is tried again after 5 s, then twice as long each time, up to this.
DISPATCH_SWEEP_RETRY_MAX_SECONDS = env_int("DISPATCH_SWEEP_RETRY_MAX_SECONDS", 60)
# How far a device's clock may run ahead of the server's before its observed time is refused.
DISPATCH_CLOCK_SKEW_SECONDS = env_int("DISPATCH_CLOCK_SKEW_SECONDS", 120)
# The oldest offline-recorded time accepted.
DISPATCH_MAX_OFFLINE_HOURS = env_int("DISPATCH_MAX_OFFLINE_HOURS", 24)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # A database error is written by its type, SQLSTATE and the constraint, table and column it
    # names, never by its text: PostgreSQL quotes the failing row or key, health information
    # included (apps/common/logs.py).
    "formatters": {
        "plain": {
            "class": "apps.common.logs.RedactingFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        }
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        # Django's own console handler (under DEBUG) would print every warning a second time
        # beside the root's: configuring the logger here leaves it only the root's.
        "django": {"level": "INFO"},
        # Request lines carry paths and query strings only; bodies are never logged.
        "django.db.backends": {"level": "WARNING"},
        # uvicorn configures its loggers before it imports the application, with a handler and
        # format of its own that would write an exception out of the application (a database
        # error's text with it) as it is: its error log is written by the console handler
        # instead. Not "uvicorn" itself: configuring a logger resets its children, and the
        # access log, off in the Procfile, would come back on.
        "uvicorn.error": {"handlers": ["console"], "propagate": False},
    },
}

from config.settings.followups import *  # noqa: E402, F403
from config.settings.notifications import *  # noqa: E402, F403
