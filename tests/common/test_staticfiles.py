"""Static files are served by WhiteNoise, and every other request passes on to Django."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.live import asgi_server


def test_a_web_process_serves_static_files_and_passes_on_what_is_not_one(live_server_logs: Path) -> None:
    with asgi_server(live_server_logs, name="web-static") as server, httpx.Client(base_url=server.http_url) as client:
        stylesheet = client.get("/static/admin/css/base.css")
        missing = client.get("/static/admin/css/no-such-file.css")
        api = client.get("/api/v1/me/")  # reaches the API, which asks who is calling

    assert (stylesheet.status_code, stylesheet.headers["content-type"]) == (200, 'text/css; charset="utf-8"')
    assert "body" in stylesheet.text
    assert missing.status_code == 404
    assert api.status_code == 401
