"""Channel adapters: each sends one message to one address and says what became of it.

Every adapter returns a SendResult and raises nothing for provider answers; the services
turn results into attempt statuses. Adapters know nothing of models beyond plain values.
"""

from __future__ import annotations

from apps.notifications.channels.base import Message, Outcome, PushTarget, SendResult

__all__ = ["Message", "Outcome", "PushTarget", "SendResult"]
