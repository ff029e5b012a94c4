"""Local stand-ins for the push and SMS providers, following each one's published contract.

They run in the test process on 127.0.0.1, check every request the way the provider would
(path, headers, authentication, payload shape), answer with the provider's documented
success and error bodies, and keep what they received. A request that breaks the contract
is answered with an error and listed in ``violations``, which the tests assert is empty.

The answer depends on the address, as with the providers' own test values:

    FCM token          fcm-unregistered-*   404 UNREGISTERED
                       fcm-invalid-*        400 INVALID_ARGUMENT (not a valid registration token)
                       fcm-throttled-*      429 QUOTA_EXCEEDED, Retry-After: 1, on the first try
    Twilio To          +15005550001         400, code 21211 (invalid 'To' number)
                       +15005550429         429, code 20429, on the first try
                       +15005550777         held until ``release()``: a send in flight
    Web Push endpoint  /wp/gone-*           410 Gone;  /wp/missing-*  404 Not Found
    APNs device token  dead*                410 Unregistered;  bad0*  400 BadDeviceToken
                       0ther*               400 DeviceTokenNotForTopic (another app's token)
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h2.config
import h2.connection
import h2.events
import http_ece
import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from tests.notifications import keys, payloads

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
TWILIO_SID = "AC" + "0" * 31 + "1"
TWILIO_TOKEN = "standin-auth-token"
TWILIO_FROM = "+15005550006"
HELD_NUMBER = "+15005550777"


@dataclass
class Received:
    provider: str
    path: str
    headers: dict[str, str]
    body: bytes
    content: Any = None


@dataclass
class StandIn:
    """The FCM (with its OAuth token endpoint), Twilio and Web Push stand-in, on one port."""

    fcm: keys.FcmAccount = field(default_factory=keys.fcm_account)
    received: list[Received] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    subscriptions: dict[str, keys.BrowserSubscription] = field(default_factory=dict)
    issued_tokens: set[str] = field(default_factory=set)
    held: threading.Event = field(default_factory=threading.Event)
    release_event: threading.Event = field(default_factory=threading.Event)
    _seen: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    def of(self, provider: str) -> list[Received]:
        return [request for request in self.received if request.provider == provider]

    def release(self) -> None:
        self.release_event.set()

    def reset(self) -> None:
        with self._lock:
            self.received.clear()
            self.violations.clear()
            self._seen.clear()
        self.held.clear()
        self.release_event.clear()

    def first_time(self, key: str) -> bool:
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
            return True

    def web_push_endpoint(self, name: str) -> tuple[str, keys.BrowserSubscription]:
        subscription = keys.browser_subscription()
        self.subscriptions[name] = subscription
        return f"{self.url}/wp/{name}", subscription

    # --- the providers -----------------------------------------------------------------------

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        if path == "/token":
            return self._oauth(headers, body)
        if path.startswith("/v1/projects/"):
            return self._fcm(path, headers, body)
        if path.startswith("/2010-04-01/Accounts/"):
            return self._twilio(path, headers, body)
        if path.startswith("/wp/"):
            return self._web_push(path, headers, body)
        return self._violation(f"unknown path {path}", 404)

    def _violation(self, problem: str, status: int = 400) -> tuple[int, dict[str, str], bytes]:
        self.violations.append(problem)
        return status, {"Content-Type": "application/json"}, json.dumps({"error": problem}).encode()

    @staticmethod
    def _json(status: int, body: dict[str, Any], **headers: str) -> tuple[int, dict[str, str], bytes]:
        return status, {"Content-Type": "application/json", **headers}, json.dumps(body).encode()

    def _oauth(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        """RFC 7523 JWT bearer grant, as Google's token endpoint takes it from a service account."""
        form = {key: values[0] for key, values in parse_qs(body.decode()).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return self._violation("oauth: wrong grant_type")
        try:
            header = jwt.get_unverified_header(form.get("assertion", ""))
            claims = jwt.decode(
                form["assertion"],
                keys.pem_public(self.fcm.private_key.public_key()),
                algorithms=["RS256"],
                audience=self.token_uri,
                issuer=self.fcm.client_email,
                options={"require": ["iss", "aud", "iat", "exp"]},
            )
        except (jwt.PyJWTError, KeyError) as error:
            return self._violation(f"oauth: bad assertion ({error})", 400)
        if header.get("kid") != self.fcm.private_key_id or claims.get("scope") != FCM_SCOPE:
            return self._violation("oauth: wrong kid or scope")
        if claims["exp"] - claims["iat"] > 3600:
            return self._violation("oauth: assertion lives longer than an hour")
        token = f"ya29.standin-{secrets.token_hex(8)}"
        self.issued_tokens.add(token)
        return self._json(200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    def _fcm(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        """FCM HTTP v1 messages:send."""
        if path != f"/v1/projects/{self.fcm.project_id}/messages:send":
            project = path.removeprefix("/v1/projects/").removesuffix("/messages:send")
            if path.startswith("/v1/projects/") and path.endswith("/messages:send") and "/" not in project:
                # A project id that is not the key's (FCM_PROJECT_ID mistyped): Google's NOT_FOUND.
                resource = {
                    "@type": "type.googleapis.com/google.rpc.ResourceInfo",
                    "resourceName": f"projects/{project}",
                }
                message = f"Resource projects/{project} could not be found."
                error = {"code": 404, "message": message, "status": "NOT_FOUND", "details": [resource]}
                return self._json(404, {"error": error})
            return self._violation(f"fcm: wrong path {path}", 404)
        bearer = headers.get("authorization", "")
        if not bearer.startswith("Bearer ") or bearer.removeprefix("Bearer ") not in self.issued_tokens:
            self.violations.append("fcm: no valid OAuth bearer token")
            return self._json(401, {"error": {"code": 401, "status": "UNAUTHENTICATED", "message": "no auth"}})
        if not headers.get("content-type", "").startswith("application/json"):
            return self._violation("fcm: body is not JSON")
        message = json.loads(body).get("message", {})
        token = message.get("token", "")
        data = message.get("data", {})
        if not token or not all(isinstance(value, str) for value in data.values()):
            return self._violation("fcm: message needs a token, and data values must be strings")
        if message.get("android", {}).get("priority") not in {"high", "normal"}:
            return self._violation("fcm: android.priority must be high or normal")
        self.received.append(Received("fcm", path, headers, body, message))
        payloads.record("fcm", {key: value for key, value in message.items() if key != "token"})

        def fcm_error(status: int, state: str, code: str, text: str) -> dict[str, Any]:
            detail = {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}
            return {"error": {"code": status, "message": text, "status": state, "details": [detail]}}

        if token.startswith("fcm-unregistered"):
            return self._json(404, fcm_error(404, "NOT_FOUND", "UNREGISTERED", "Requested entity was not found."))
        if token.startswith("fcm-invalid"):
            text = "The registration token is not a valid FCM registration token"
            return self._json(400, fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", text))
        if token.startswith("fcm-throttled") and self.first_time(token):
            error = fcm_error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "Quota exceeded.")
            return self._json(429, error, **{"Retry-After": "1"})
        return self._json(200, {"name": f"projects/{self.fcm.project_id}/messages/0:{secrets.token_hex(8)}"})

    def _twilio(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        """Twilio Programmable Messaging: create a Message."""
        if path != f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json":
            return self._violation(f"twilio: wrong path {path}", 404)
        expected = "Basic " + base64.b64encode(f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()
        if headers.get("authorization") != expected:
            self.violations.append("twilio: wrong basic auth")
            return self._json(401, {"code": 20003, "message": "Authenticate", "status": 401})
        if headers.get("content-type") != "application/x-www-form-urlencoded":
            return self._violation("twilio: body must be form-encoded")
        form = {key: values[0] for key, values in parse_qs(body.decode()).items()}
        if not form.get("To") or not form.get("Body") or not (form.get("From") or form.get("MessagingServiceSid")):
            return self._violation("twilio: To, Body and From or MessagingServiceSid are required")
        self.received.append(Received("twilio", path, headers, body, form))
        payloads.record("sms", form["Body"])
        to = form["To"]
        if to == HELD_NUMBER:
            self.held.set()
            self.release_event.wait(30)
        if to == "+15005550001":
            text = f"The 'To' number {to} is not a valid phone number."
            error = {"code": 21211, "message": text, "more_info": "https://www.twilio.com/docs/errors/21211"}
            return self._json(400, {**error, "status": 400})
        if to == "+15005550429" and self.first_time(to):
            return self._json(429, {"code": 20429, "message": "Too Many Requests", "status": 429})
        sid = "SM" + secrets.token_hex(16)
        return self._json(
            201, {"sid": sid, "status": "queued", "to": to, "from": form.get("From"), "body": form["Body"]}
        )

    def _web_push(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        """A browser push service (RFC 8030) checking VAPID (RFC 8292) and decrypting (RFC 8291)."""
        name = path.removeprefix("/wp/")
        subscription = self.subscriptions.get(name)
        if subscription is None:
            return self._violation(f"webpush: unknown subscription {name}", 404)
        authorization = headers.get("authorization", "")
        if not authorization.startswith("vapid "):
            return self._violation("webpush: Authorization is not 'vapid t=..., k=...'", 401)
        parts = dict(part.strip().split("=", 1) for part in authorization.removeprefix("vapid ").split(","))
        try:
            public_key = ec.EllipticCurvePublicKey.from_encoded_point(
                ec.SECP256R1(), base64.urlsafe_b64decode(parts["k"] + "=" * (-len(parts["k"]) % 4))
            )
            claims = jwt.decode(parts["t"], public_key, algorithms=["ES256"], audience=self.url)
        except (KeyError, ValueError, jwt.PyJWTError) as error:
            return self._violation(f"webpush: bad VAPID token ({error})", 403)
        if not str(claims.get("sub", "")).startswith(("mailto:", "https:")) or claims["exp"] > time.time() + 86400:
            return self._violation("webpush: VAPID sub must be mailto:/https: and exp within 24 hours", 403)
        if public_key.public_numbers() != keys.vapid_private_key().public_key().public_numbers():
            return self._violation("webpush: signed with another VAPID key", 403)
        if headers.get("content-encoding") != "aes128gcm" or "ttl" not in headers:
            return self._violation("webpush: needs Content-Encoding: aes128gcm and a TTL")
        if headers.get("urgency") not in {"very-low", "low", "normal", "high"}:
            return self._violation("webpush: Urgency must be one of RFC 8030's values")
        try:
            plaintext = http_ece.decrypt(
                body, private_key=subscription.private_key, auth_secret=subscription.auth_secret, version="aes128gcm"
            )
        except Exception as error:  # noqa: BLE001 — any decryption failure is a contract violation
            return self._violation(f"webpush: payload does not decrypt ({type(error).__name__})")
        content = json.loads(plaintext)
        self.received.append(Received("webpush", path, headers, body, content))
        payloads.record("webpush", content)
        if name.startswith("gone"):
            return 410, {}, b""
        if name.startswith("missing"):
            return 404, {}, b""
        return 201, {"Location": f"{self.url}/messages/{secrets.token_hex(8)}"}, b""


def _handler_for(stand_in: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            headers = {key.lower(): value for key, value in self.headers.items()}
            status, response_headers, response_body = stand_in.handle(urlsplit(self.path).path, headers, body)
            self.send_response(status)
            for key, value in response_headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(response_body)))
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(response_body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


@contextlib.contextmanager
def running_stand_in() -> Iterator[StandIn]:
    stand_in = StandIn()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(stand_in))
    server.daemon_threads = True
    stand_in.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stand_in
    finally:
        stand_in.release()
        server.shutdown()
        server.server_close()


# --- APNs: HTTP/2 over TLS -----------------------------------------------------------------------


@dataclass
class ApnsStandIn:
    """APNs' provider API over real HTTP/2 and TLS (ALPN h2), with its token-based auth."""

    key: keys.ApnsKey
    cert_file: Path
    key_file: Path
    received: list[Received] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    connections: int = 0
    port: int = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def reset(self) -> None:
        self.received.clear()
        self.violations.clear()

    def answer(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        def error(status: int, reason: str) -> tuple[int, dict[str, str], bytes]:
            return status, {"content-type": "application/json"}, json.dumps({"reason": reason}).encode()

        def violation(problem: str, status: int, reason: str) -> tuple[int, dict[str, str], bytes]:
            self.violations.append(problem)
            return error(status, reason)

        path = headers.get(":path", "")
        if headers.get(":method") != "POST" or not path.startswith("/3/device/"):
            return violation(f"apns: {headers.get(':method')} {path}", 405, "MethodNotAllowed")
        token = path.removeprefix("/3/device/")
        authorization = headers.get("authorization", "")
        if not authorization.startswith("bearer "):
            return violation("apns: no provider token", 403, "MissingProviderToken")
        provider_token = authorization.removeprefix("bearer ")
        try:
            header = jwt.get_unverified_header(provider_token)
            claims = jwt.decode(
                provider_token,
                keys.pem_public(self.key.private_key.public_key()),
                algorithms=["ES256"],
                options={"require": ["iss", "iat"]},
            )
        except jwt.PyJWTError as problem:
            return violation(f"apns: provider token does not verify ({problem})", 403, "InvalidProviderToken")
        if header.get("kid") != self.key.key_id or claims["iss"] != self.key.team_id:
            return violation("apns: wrong kid or iss", 403, "InvalidProviderToken")
        if time.time() - claims["iat"] > 3600:
            return violation("apns: provider token older than an hour", 403, "ExpiredProviderToken")
        if headers.get("apns-topic") != self.key.topic:
            return violation("apns: wrong apns-topic", 400, "TopicDisallowed")
        if headers.get("apns-push-type") != "alert" or headers.get("apns-priority") not in {"10", "5"}:
            return violation("apns: apns-push-type alert and apns-priority 10 or 5 expected", 400, "InvalidPushType")
        content = json.loads(body)
        if not isinstance(content.get("aps", {}).get("alert"), dict) or len(body) > 4096:
            return violation("apns: aps.alert missing or payload over 4 KB", 400, "PayloadTooLarge")
        self.received.append(Received("apns", path, headers, body, content))
        payloads.record("apns", content)
        if token.startswith("dead"):
            status, response_headers, response_body = error(410, "Unregistered")
            response_body = json.dumps({"reason": "Unregistered", "timestamp": int(time.time() * 1000)}).encode()
            return status, response_headers, response_body
        if token.startswith("bad0"):
            return error(400, "BadDeviceToken")
        if token.startswith("0ther"):
            return error(400, "DeviceTokenNotForTopic")
        return 200, {"apns-id": headers.get("apns-id", "")}, b""

    def serve_connection(self, raw: socket.socket, context: ssl.SSLContext) -> None:
        try:
            tls = context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        if tls.selected_alpn_protocol() != "h2":
            self.violations.append("apns: client did not negotiate HTTP/2 (ALPN h2)")
            tls.close()
            return
        self.connections += 1
        connection = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        connection.initiate_connection()
        tls.sendall(connection.data_to_send())
        streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        with tls:
            while True:
                try:
                    data = tls.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                for event in connection.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        streams[event.stream_id] = ({str(k): str(v) for k, v in event.headers or []}, bytearray())
                    elif isinstance(event, h2.events.DataReceived):
                        streams[event.stream_id][1].extend(event.data or b"")
                        connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        headers, body = streams.pop(event.stream_id)
                        status, response_headers, response_body = self.answer(headers, bytes(body))
                        connection.send_headers(
                            event.stream_id,
                            [(":status", str(status)), *response_headers.items()],
                            end_stream=not response_body,
                        )
                        if response_body:
                            connection.send_data(event.stream_id, response_body, end_stream=True)
                tls.sendall(connection.data_to_send())


@contextlib.contextmanager
def running_apns_stand_in(folder: Path) -> Iterator[ApnsStandIn]:
    cert_file, key_file = keys.self_signed_certificate(folder)
    stand_in = ApnsStandIn(keys.apns_key(), cert_file, key_file)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    context.set_alpn_protocols(["h2"])
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stand_in.port = listener.getsockname()[1]
    stopping = threading.Event()

    def accept_loop() -> None:
        while not stopping.is_set():
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=stand_in.serve_connection, args=(raw, context), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    try:
        yield stand_in
    finally:
        stopping.set()
        listener.close()
