"""Production: secure by default; every secret must come from the environment."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_int, env_list, env_str
from config.settings.base import *  # noqa: F403
from config.settings.base import DEVELOPMENT_FIELD_ENCRYPTION_KEY, DEVELOPMENT_SECRET_KEY

SECRET_KEY = env_str("SECRET_KEY")
if SECRET_KEY.strip() == DEVELOPMENT_SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY is the development value, published with the source: set a secret one.")
FIELD_ENCRYPTION_KEYS = env_str("FIELD_ENCRYPTION_KEYS").split(",")
# Whoever has the source could open what the development key seals. It may still be listed
# after the newest key, to open values sealed with it while they are resealed.
if FIELD_ENCRYPTION_KEYS[0].strip() == DEVELOPMENT_FIELD_ENCRYPTION_KEY:
    raise ImproperlyConfigured(
        "FIELD_ENCRYPTION_KEYS begins with the development key, published with the source: "
        "put a key of your own first (see README, Encryption at rest)."
    )
DEBUG = False
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [])

# uvicorn already takes the scheme from the X-Forwarded-Proto of a proxy in FORWARDED_ALLOW_IPS,
# and ignores it from anyone else. Django believing the header too would take any client that
# writes it for one over HTTPS: Secure cookies sent over plain HTTP, no redirect to HTTPS. Only
# where every request reaches the web process through a proxy that sets the header itself (see
# README, Running with Docker).
if env_bool("TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
# Health checks from the load balancer arrive over plain HTTP inside the network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_SECURE = True
CSRF_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

REST_FRAMEWORK = {
    **REST_FRAMEWORK,  # noqa: F405
    "DEFAULT_RENDERER_CLASSES": ["apps.common.api.renderers.JSONRenderer"],
}
