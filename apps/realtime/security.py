from __future__ import annotations

from typing import Any

from channels.security.websocket import OriginValidator


class BrowserOriginValidator(OriginValidator):
    """Checks the Origin of browser sockets; admits native apps, which send no Origin.

    A page on another site cannot open a socket in a user's name; a native app has no
    ambient credentials to abuse and authenticates with its device token in the first frame.
    """

    def valid_origin(self, parsed_origin: Any) -> bool:
        if parsed_origin is None:
            return True
        return bool(self.validate_origin(parsed_origin))
