"""Form fields from a method's JSON schema, and params back from the submitted form.

Generic on purpose: a new method (or a new param) appears in the console without UI code.
Each property becomes one field, by its schema:

- ``enum`` -> a select; ``boolean`` -> a checkbox; ``integer`` / ``number`` -> a number
  input with the schema's bounds; ``string`` -> a text input;
- an array of scalars -> a comma-separated text input;
- ``anyOf [X, null]`` -> X, empty meaning null;
- anything else (objects, unions) -> a JSON textarea.

An empty field is left out, so the method's own default applies; the method's pydantic
model validates the result (a 422 shown on the form, as the API would answer).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.errors import InvalidParams

PREFIX = "param."
_SCALARS = {"integer", "number", "string", "boolean"}


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    kind: str  # integer | number | string | boolean | enum | list | json
    description: str = ""
    default: Any = None
    required: bool = False
    options: list[str] = field(default_factory=list)
    minimum: float | None = None
    maximum: float | None = None
    item_kind: str = "string"

    @property
    def input_name(self) -> str:
        return PREFIX + self.name

    @property
    def shown_default(self) -> str:
        """The default as the input shows it ('' when the schema has none)."""
        if self.default is None:
            return ""
        if self.kind == "list":
            return ", ".join(str(v) for v in self.default)
        if self.kind == "json":
            return json.dumps(self.default)
        return str(self.default)


def _unwrap_nullable(prop: dict[str, Any]) -> dict[str, Any]:
    variants = prop.get("anyOf")
    if variants and len(variants) == 2 and {"type": "null"} in variants:
        inner = next(v for v in variants if v != {"type": "null"})
        return {**{k: v for k, v in prop.items() if k != "anyOf"}, **inner}
    return prop


def _kind(prop: dict[str, Any]) -> tuple[str, str]:
    if "enum" in prop and all(isinstance(v, str) for v in prop["enum"]):
        return "enum", "string"
    kind = prop.get("type")
    if kind in _SCALARS:
        return kind, "string"
    if kind == "array" and prop.get("items", {}).get("type") in _SCALARS - {"boolean"}:
        return "list", prop["items"]["type"]
    return "json", "string"


def fields_of(schema: dict[str, Any]) -> list[Field]:
    required = set(schema.get("required", []))
    out = []
    for name, raw in schema.get("properties", {}).items():
        prop = _unwrap_nullable(raw)
        kind, item_kind = _kind(prop)
        out.append(
            Field(
                name=name,
                label=raw.get("title") or name,
                kind=kind,
                description=raw.get("description", ""),
                default=raw.get("default"),
                required=name in required,
                options=[str(v) for v in prop.get("enum", [])],
                minimum=prop.get("minimum", prop.get("exclusiveMinimum")),
                maximum=prop.get("maximum", prop.get("exclusiveMaximum")),
                item_kind=item_kind,
            )
        )
    return out


def _scalar(kind: str, text: str, name: str) -> Any:
    try:
        if kind == "integer":
            return int(text)
        if kind == "number":
            return float(text)
    except ValueError:
        what = "an integer" if kind == "integer" else "a number"
        raise InvalidParams(f"{name}: {text!r} is not {what}.", field=name) from None
    return text


def params_from_form(fields: list[Field], form: Mapping[str, list[str]]) -> dict[str, Any]:
    """``form``: every submitted value by input name (a checkbox sends a hidden ``false``
    before its ``true``: the last value wins)."""
    params: dict[str, Any] = {}
    for f in fields:
        values = form.get(f.input_name) or []
        text = values[-1].strip() if values else ""
        if f.kind == "boolean":
            if values:
                params[f.name] = text == "true"
        elif not text:
            continue
        elif f.kind == "list":
            items = [t.strip() for t in text.split(",") if t.strip()]
            params[f.name] = [_scalar(f.item_kind, t, f.name) for t in items]
        elif f.kind == "json":
            try:
                params[f.name] = json.loads(text)
            except ValueError:
                raise InvalidParams(f"{f.name}: not valid JSON: {text!r}.", field=f.name) from None
        else:
            params[f.name] = _scalar(f.kind, text, f.name)
    return params
