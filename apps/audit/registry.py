"""Record types that hold health information but are not synced care records.

Synced records are health information by registration with apps.sync; a domain app names
its other such records here, from ``AppConfig.ready()``, so that the mechanisms that serve
them (the change feed over HTTP and the websocket, the admin) audit reading them (P8)
without knowing what they are::

    register_health_record("dispatch.incident", Incident)
"""

from __future__ import annotations

from django.db.models import Model

_models_by_type: dict[str, type[Model] | None] = {}


def register_health_record(record_type: str, model: type[Model] | None = None) -> None:
    if _models_by_type.get(record_type, model) is not model:
        raise ValueError(f"{record_type!r} is already registered for another model")
    _models_by_type[record_type] = model


def is_health_record(record_type: str) -> bool:
    return record_type in _models_by_type


def health_record_type_of(model: type[Model]) -> str | None:
    for record_type, registered in _models_by_type.items():
        if registered is model:
            return record_type
    return None
