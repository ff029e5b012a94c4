"""OpenAPI additions that keep the published schema true to what the API answers."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerExtension
from rest_framework import serializers

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status", "code", "detail", "errors"],
    "properties": {
        "status": {"type": "integer"},
        "code": {"type": "string", "description": "Machine-readable reason, e.g. `invalid_input`."},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "code", "detail"],
                "properties": {
                    "field": {"type": "string", "nullable": True, "description": "Dotted path in the request."},
                    "code": {"type": "string"},
                    "detail": {"type": "string"},
                },
            },
        },
    },
    "additionalProperties": True,
}

NO_NUL_CHARACTERS = "^[^\\u0000]*$"
# At least one character Python's str.strip() keeps: \s plus the separators it also strips.
NOT_BLANK_NO_NUL = "^[^\\u0000]*[^\\u0000\\s\\u001c-\\u001f\\u0085][^\\u0000]*$"

ERROR_RESPONSES = {
    "400": "Malformed request or invalid fields.",
    "401": "Missing, unknown or expired token, or revoked device.",
    "403": "Not allowed.",
    "404": "No such record, or not yours to see.",
    "413": "Request body too large.",
    "415": "Unsupported content type.",
    "429": "Too many requests; see Retry-After.",
}


def add_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """Every operation may answer with the one error shape; say so in the schema."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    reference = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            for status, description in ERROR_RESPONSES.items():
                responses.setdefault(status, {"description": description, "content": reference})
    return result


class StrictSerializerExtension(OpenApiSerializerExtension):
    """A StrictSerializer refuses unknown fields; its schema says so."""

    target_class = "apps.common.api.serializers.StrictSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        schema: dict[str, Any] = auto_schema._map_basic_serializer(self.target, direction)
        schema["additionalProperties"] = False
        fields = self.target.fields
        for name, field_schema in schema.get("properties", {}).items():
            if field_schema.get("type") != "string" or {"enum", "format", "pattern"} & set(field_schema):
                continue
            field = fields.get(name)
            trimmed_and_required = (
                isinstance(field, serializers.CharField) and field.trim_whitespace and not field.allow_blank
            )
            # DRF refuses NUL characters (PostgreSQL cannot store them) and, once it has trimmed
            # the whitespace, a blank value.
            field_schema["pattern"] = NOT_BLANK_NO_NUL if trimmed_and_required else NO_NUL_CHARACTERS
        return schema
