"""National identifiers as validated string types, for every service's schemas.

A wrong identifier is a 422 naming the field and the rule, never a 500 later.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, StringConstraints

_FINESS = re.compile(r"^(\d{2}|2[AB])\d{7}$")


def luhn_valid(digits: str) -> bool:
    """The Luhn check (ISO/IEC 7812-1) over a string of digits."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def is_finess(value: str) -> bool:
    """A FINESS number: 9 characters, a département (``2A``/``2B`` for Corsica), a Luhn key."""
    if not _FINESS.match(value):
        return False
    return luhn_valid(value) if value.isdigit() else True


def _finess(value: str) -> str:
    if not is_finess(value):
        raise ValueError("must be a FINESS number: 9 digits (département, number, Luhn key)")
    return value


Finess = Annotated[str, StringConstraints(max_length=9), AfterValidator(_finess)]
"""A FINESS establishment number, validated (format and Luhn key)."""
