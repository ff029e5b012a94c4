"""Settings of the notifications mechanism (apps.notifications), all from the environment.

Every channel works with no account: its default backend writes what would have been sent
to a local outbox folder. Set a channel's backend to its provider's name to send for real.
"""

from __future__ import annotations

from pathlib import Path

from config.env import env_bool, env_int, env_list, env_str

_BASE_DIR = Path(__file__).resolve().parent.parent.parent

# The Celery queue that notification sends go to (workers consume "celery" unless told otherwise).
NOTIFICATIONS_TASK_QUEUE = env_str("NOTIFICATIONS_TASK_QUEUE", "celery")
# Attempts (of one channel) one send task takes: claimed in one statement, one SMTP session.
# A worker killed mid-chunk leaves one send with an unknown outcome (all of an in-app chunk);
# the sends it had not handed to their provider yet are queued again.
NOTIFICATIONS_SEND_CHUNK = env_int("NOTIFICATIONS_SEND_CHUNK", 100)

# How long a device has to confirm an urgent (normal) notification before the fallback
# channel (SMS for urgent, email for normal) goes out.
NOTIFICATIONS_URGENT_FALLBACK_SECONDS = env_int("NOTIFICATIONS_URGENT_FALLBACK_SECONDS", 60)
NOTIFICATIONS_NORMAL_FALLBACK_SECONDS = env_int("NOTIFICATIONS_NORMAL_FALLBACK_SECONDS", 900)

# The periodic sweep: fallbacks whose deadline passed, retries whose backoff is over,
# sends whose worker died. Rows per run, and how long an unfinished send may stay in flight.
NOTIFICATIONS_SWEEP_BATCH = env_int("NOTIFICATIONS_SWEEP_BATCH", 200)
NOTIFICATIONS_SENDING_STALE_SECONDS = env_int("NOTIFICATIONS_SENDING_STALE_SECONDS", 300)
# A send that the provider asked us to retry (429, 5xx, network) waits base * 2^(tries-1) s.
NOTIFICATIONS_MAX_TRIES = env_int("NOTIFICATIONS_MAX_TRIES", 5)
NOTIFICATIONS_RETRY_BASE_SECONDS = env_int("NOTIFICATIONS_RETRY_BASE_SECONDS", 10)
NOTIFICATIONS_RETRY_MAX_SECONDS = env_int("NOTIFICATIONS_RETRY_MAX_SECONDS", 600)

# Per recipient and channel, at most LIMIT messages per window (an escalation storm must not
# send a hundred texts). The in-app channel is not limited: it is the app itself.
NOTIFICATIONS_RATE_WINDOW_SECONDS = env_int("NOTIFICATIONS_RATE_WINDOW_SECONDS", 600)
NOTIFICATIONS_RATE_LIMIT_SMS = env_int("NOTIFICATIONS_RATE_LIMIT_SMS", 5)
NOTIFICATIONS_RATE_LIMIT_PUSH = env_int("NOTIFICATIONS_RATE_LIMIT_PUSH", 30)
NOTIFICATIONS_RATE_LIMIT_EMAIL = env_int("NOTIFICATIONS_RATE_LIMIT_EMAIL", 10)

# Links in SMS and email bodies are this base URL plus the notification's in-app path.
NOTIFICATIONS_LINK_BASE_URL = env_str("NOTIFICATIONS_LINK_BASE_URL", "http://localhost:8000")
NOTIFICATIONS_OUTBOX_DIR = env_str("NOTIFICATIONS_OUTBOX_DIR", str(_BASE_DIR / ".data" / "notifications-outbox"))
NOTIFICATIONS_HTTP_TIMEOUT_SECONDS = env_int("NOTIFICATIONS_HTTP_TIMEOUT_SECONDS", 10)

# Backends: "outbox" (default: JSON files in NOTIFICATIONS_OUTBOX_DIR), "console" (a log line
# with ids only), or the provider.
NOTIFICATIONS_FCM_BACKEND = env_str("NOTIFICATIONS_FCM_BACKEND", "outbox")  # or "fcm"
NOTIFICATIONS_APNS_BACKEND = env_str("NOTIFICATIONS_APNS_BACKEND", "outbox")  # or "apns"
NOTIFICATIONS_WEBPUSH_BACKEND = env_str("NOTIFICATIONS_WEBPUSH_BACKEND", "outbox")  # or "webpush"
NOTIFICATIONS_SMS_BACKEND = env_str("NOTIFICATIONS_SMS_BACKEND", "outbox")  # or "twilio"
NOTIFICATIONS_EMAIL_BACKEND = env_str("NOTIFICATIONS_EMAIL_BACKEND", "outbox")  # or "django"

# FCM HTTP v1: a service-account key (JSON text, or FCM_SERVICE_ACCOUNT_FILE pointing at it).
FCM_SERVICE_ACCOUNT = env_str("FCM_SERVICE_ACCOUNT", "")
FCM_PROJECT_ID = env_str("FCM_PROJECT_ID", "")  # defaults to the key's project_id
FCM_ENDPOINT = env_str("FCM_ENDPOINT", "https://fcm.googleapis.com")

# APNs over HTTP/2 with a token-based (.p8) provider key.
APNS_KEY = env_str("APNS_KEY", "")  # the .p8 PEM text (or APNS_KEY_FILE)
APNS_KEY_ID = env_str("APNS_KEY_ID", "")
APNS_TEAM_ID = env_str("APNS_TEAM_ID", "")
APNS_TOPIC = env_str("APNS_TOPIC", "")  # the app's bundle id
APNS_ENDPOINT = env_str("APNS_ENDPOINT", "https://api.push.apple.com")  # sandbox: https://api.sandbox.push.apple.com
APNS_CA_FILE = env_str("APNS_CA_FILE", "")  # only to trust a private CA; empty uses the system's

# Web Push with VAPID. Only subscriptions at these push services are accepted (https only).
VAPID_PRIVATE_KEY = env_str("VAPID_PRIVATE_KEY", "")
VAPID_PUBLIC_KEY = env_str("VAPID_PUBLIC_KEY", "")
VAPID_SUBJECT = env_str("VAPID_SUBJECT", "mailto:admin@example.org")
NOTIFICATIONS_WEBPUSH_ALLOWED_HOSTS = env_list(
    "NOTIFICATIONS_WEBPUSH_ALLOWED_HOSTS",
    [
        "fcm.googleapis.com",
        "updates.push.services.mozilla.com",
        "web.push.apple.com",
        ".notify.windows.com",
    ],
)
# Plain-http endpoints only for local stand-ins in tests and development.
NOTIFICATIONS_WEBPUSH_ALLOW_HTTP = env_bool("NOTIFICATIONS_WEBPUSH_ALLOW_HTTP", False)

# SMS through Twilio's Messages API.
TWILIO_ACCOUNT_SID = env_str("TWILIO_ACCOUNT_SID", "")
TWILIO_AUTH_TOKEN = env_str("TWILIO_AUTH_TOKEN", "")
TWILIO_FROM_NUMBER = env_str("TWILIO_FROM_NUMBER", "")
TWILIO_MESSAGING_SERVICE_SID = env_str("TWILIO_MESSAGING_SERVICE_SID", "")
TWILIO_API_BASE = env_str("TWILIO_API_BASE", "https://api.twilio.com")
# Where Twilio reports delivery (delivered / undelivered / failed), exactly as Twilio will call
# it, e.g. https://tandem.example.org/api/v1/notifications/sms/twilio-status/; empty: no reports.
TWILIO_STATUS_CALLBACK_URL = env_str("TWILIO_STATUS_CALLBACK_URL", "")
# The URL Twilio posts replies to (STOP / START), as configured on the number.
TWILIO_INBOUND_URL = env_str("TWILIO_INBOUND_URL", "")
# The country calling code of numbers written without one ("(212) 555-0142"): they are
# matched and sent as E.164, the form Twilio reports replies (STOP) from.
NOTIFICATIONS_SMS_DEFAULT_COUNTRY_CODE = env_str("NOTIFICATIONS_SMS_DEFAULT_COUNTRY_CODE", "1")

# Email through Django's email backends when NOTIFICATIONS_EMAIL_BACKEND is "django".
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Tandem <no-reply@example.org>")
