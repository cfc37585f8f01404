"""The catalogue of event types in Markdown, generated from the payload models.

``python -m ght_shared.payloads.catalogue`` prints it; ``--write docs/events.md`` puts it
between the lines ``<!-- catalogue:begin -->`` and ``<!-- catalogue:end -->`` of that file
(``make events-doc``); ``--check docs/events.md`` fails when the file is not up to date.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ght_shared.payloads import (
    Payload,
    activity,
    beds,
    common,
    contracts,
    referential,
    staffing,
)

BEGIN = "<!-- catalogue:begin -->"
END = "<!-- catalogue:end -->"
WIDTH = 92

LEGEND = """\
Each `####` is an event type, with its subject (a template over its fields), whether a
service publishes it today, the services whose code reads it today, and who sees it on the
gateway's live feed: `public` (every principal), `establishment` (territorial principals
and those of the establishment in the envelope, or of the establishments in the fields
named; an event naming none is territorial) or `territorial` (`["*"]` only); see
`docs/roles.md`. The fields are the JSON names of `data`. *required*:
the key must be there, though a type "or null" may be null; a field that is not required
may be absent, and producers leave it out unless they have a value for it. `integer`,
`number` and `boolean` are JSON numbers and booleans: a string, or a boolean for a number,
is refused. `FINESS` is a string, a FINESS number whose Luhn key is checked. A consumer
ignores the fields it does not know; `Payload.of(event)` raises `UnreadablePayload` when a
field does not fit its type.
"""


@dataclass(frozen=True)
class Section:
    """The event types of one owner."""

    owner: str
    about: str
    publisher: str
    models: tuple[type[Payload], ...]


SECTIONS: tuple[Section, ...] = (
    Section(
        "referential",
        f"Owned by {referential.SERVICE}, stream `{referential.STREAM}`.",
        referential.SERVICE,
        referential.PAYLOADS,
    ),
    Section(
        "activity",
        f"Owned by {activity.SERVICE}, stream `{activity.STREAM}`.",
        activity.SERVICE,
        activity.PAYLOADS,
    ),
    Section(
        "beds",
        f"Owned by {beds.SERVICE}, stream `{beds.STREAM}`. No event carries a patient's or"
        " a stay's identifier.",
        beds.SERVICE,
        beds.PAYLOADS,
    ),
    Section(
        "contracts",
        f"Owned by {contracts.SERVICE}, stream `{contracts.STREAM}`.",
        contracts.SERVICE,
        contracts.PAYLOADS,
    ),
    Section(
        "staffing",
        f"Owned by {staffing.SERVICE}, stream `{staffing.STREAM}`.",
        staffing.SERVICE,
        staffing.PAYLOADS,
    ),
    Section(
        "dead letters",
        "Published by the consumer of every service (`ght_shared.consumer`) in the service's"
        " own stream: `<owner>` is the service's name before its first `-`, e.g."
        f" `{common.dead_letter_type('activity')}` for activity-svc.",
        "the consumer of any service",
        common.PAYLOADS,
    ),
)


def render() -> str:
    """The catalogue, in Markdown (the same text for the same models)."""
    out = [LEGEND]
    described: dict[str, str] = {}  # nested model -> the event type that describes it
    for section in SECTIONS:
        out += [f"### {section.owner}\n", _wrap(section.about) + "\n"]
        for model in section.models:
            out.append(_model(model, section.publisher, described))
    return "\n".join(out)


def _model(model: type[Payload], publisher: str, described: dict[str, str]) -> str:
    status = f"published by {publisher} today" if model.PUBLISHED else f"planned ({publisher})"
    readers = ", ".join(model.CONSUMED_BY) if model.CONSUMED_BY else None
    consumed = f"consumed today by: {readers}" if readers else "no consumer yet"
    feed = f"live feed: `{model.VISIBILITY}`"
    if model.ESTABLISHMENT_FIELDS:
        feed += " (and " + ", ".join(f"`{name}`" for name in model.ESTABLISHMENT_FIELDS) + ")"
    schema = model.model_json_schema(by_alias=True)
    definitions: dict[str, Any] = schema.get("$defs", {})
    nested: list[str] = []
    lines = [
        f"#### `{model.EVENT_TYPE}`\n",
        _wrap(f"Subject `{model.SUBJECT}`; {status}; {consumed}; {feed}.") + "\n",
        _wrap(_doc(model)) + "\n",
        _table(schema, nested),
    ]
    for name in _closure(nested, definitions):
        if name in described:
            lines.append(f"`{name}`: as in `{described[name]}`.\n")
            continue
        described[name] = model.EVENT_TYPE
        part = definitions[name]
        lines += [f"`{name}`: {part.get('description', '')}\n", _table(part, [])]
    return "\n".join(lines)


def _closure(names: list[str], definitions: dict[str, Any]) -> list[str]:
    """The nested models named, then those they name, each once."""
    seen: list[str] = []
    pending = list(names)
    while pending:
        name = pending.pop(0)
        if name in seen:
            continue
        seen.append(name)
        inner: list[str] = []
        for field in definitions[name].get("properties", {}).values():
            _type(field, inner)
        pending += inner
    return seen


def _table(schema: dict[str, Any], nested: list[str]) -> str:
    required = set(schema.get("required", ()))
    rows = ["| field | type | required | description |", "|---|---|---|---|"]
    for name, field in schema.get("properties", {}).items():
        if name in required:
            needed = "yes"
        elif field.get("default") is not None:
            needed = f"no (default `{_json(field['default'])}`)"
        else:
            needed = "no"
        cells = [f"`{name}`", _type(field, nested), needed, field.get("description", "")]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"


_FORMATS = {"date": "date", "date-time": "date-time", "uuid": "uuid", "finess": "FINESS"}


def _type(schema: dict[str, Any], nested: list[str]) -> str:
    """A readable type: ``string``, ``integer ≥ 0``, ``"U" | "O"``, ``list of string``..."""
    if "$ref" in schema:
        name: str = schema["$ref"].rpartition("/")[2]
        nested.append(name)
        return name
    if "anyOf" in schema:
        options = [option for option in schema["anyOf"] if option.get("type") != "null"]
        text = " or ".join(_type(option, nested) for option in options)
        return f"{text} or null" if len(options) < len(schema["anyOf"]) else text
    if "enum" in schema:
        return " | ".join(f'"{value}"' for value in schema["enum"])
    if "const" in schema:
        return f'"{schema["const"]}"'
    kind = schema.get("type")
    if kind == "array":
        return f"list of {_type(schema.get('items', {}), nested)}"
    if kind == "string":
        return _string(schema)
    if kind in ("integer", "number"):
        return _number(kind, schema)
    if kind in ("boolean", "object"):
        return str(kind)
    return "any"


def _string(schema: dict[str, Any]) -> str:
    if "format" in schema:
        return _FORMATS.get(schema["format"], f"string ({schema['format']})")
    text = "string"
    if "pattern" in schema:
        text += f" matching `{schema['pattern']}`"
    low, high = schema.get("minLength"), schema.get("maxLength")
    if low is not None and high is not None:
        text += f", {low} to {high} characters"
    elif high is not None:
        text += f", at most {high} characters"
    elif low is not None:
        text += f", at least {low} characters"
    return text


def _number(kind: str, schema: dict[str, Any]) -> str:
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        return f"{kind}, {low} to {high}"
    if low is not None:
        return f"{kind} ≥ {low}"
    if high is not None:
        return f"{kind} ≤ {high}"
    return kind


def _json(value: Any) -> str:
    if isinstance(value, list | dict) and not value:
        return "[]" if isinstance(value, list) else "{}"
    return repr(value)


def _doc(model: type[Payload]) -> str:
    return inspect.cleandoc(model.__doc__ or "")


def _wrap(text: str) -> str:
    paragraphs = [" ".join(part.split()) for part in text.split("\n\n")]
    return "\n\n".join(textwrap.fill(part, WIDTH) for part in paragraphs if part)


_REGION = re.compile(rf"^{re.escape(BEGIN)}$.*?^{re.escape(END)}$", re.DOTALL | re.MULTILINE)


def replaced(text: str, catalogue: str) -> str:
    """``text`` with ``catalogue`` between its marker lines; ValueError without them."""
    if not _REGION.search(text):
        raise ValueError(f"no lines {BEGIN!r} and {END!r} (in this order)")
    region = f"{BEGIN}\n\n{catalogue}\n{END}"
    return _REGION.sub(lambda _: region, text, count=1)


def write(path: Path) -> bool:
    """Rewrite the catalogue in ``path``; True when it changed."""
    text = path.read_text(encoding="utf-8")
    new = replaced(text, render())
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


def check(path: Path) -> bool:
    """True when ``path`` holds the catalogue of the models as they are."""
    text = path.read_text(encoding="utf-8")
    return replaced(text, render()) == text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ght_shared.payloads.catalogue",
        description="Print the catalogue of event types, or write it in a Markdown file.",
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument(
        "--write", metavar="PATH", type=Path, help="rewrite the catalogue between its markers"
    )
    action.add_argument(
        "--check", metavar="PATH", type=Path, help="exit 1 if PATH's catalogue is not current"
    )
    args = parser.parse_args(argv)
    try:
        if args.write is not None:
            changed = write(args.write)
            print(f"{args.write}: {'catalogue rewritten' if changed else 'already current'}")
            return 0
        if args.check is not None:
            if check(args.check):
                return 0
            print(
                f"{args.check}: the event catalogue differs from ght_shared.payloads;"
                " run make events-doc",
                file=sys.stderr,
            )
            return 1
    except (OSError, ValueError) as exc:
        print(f"{args.write or args.check}: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
