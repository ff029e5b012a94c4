"""Driving the admin's change pages as a person would: what the page shows, posted back."""

from __future__ import annotations

from typing import Any

from django.forms import CheckboxInput


def resubmitted(change_page: Any) -> dict[str, Any]:
    """What an admin change page (the test client's response, with its context) posts back
    as it stands: its form and its inline formsets."""
    forms = [change_page.context["adminform"].form]
    for inline in change_page.context["inline_admin_formsets"]:
        forms += [inline.formset.management_form, *inline.formset.forms]
    data: dict[str, Any] = {}
    for form in forms:
        for bound in form:
            if bound.field.disabled:
                continue
            widget = getattr(bound.field.widget, "widget", bound.field.widget)  # unwrapped: a related-field "+"
            rendered = widget.get_context(bound.html_name, bound.value(), {})["widget"]
            for part in rendered.get("subwidgets", [rendered]):  # a date and a time, say
                if isinstance(widget, CheckboxInput):
                    if part["attrs"].get("checked"):
                        data[part["name"]] = "on"
                elif part["value"] is not None:
                    data[part["name"]] = part["value"]
    return data
