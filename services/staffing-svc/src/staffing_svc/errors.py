"""Errors of staffing-svc: nouns of what went wrong, each with its status and stable code.

A new error is two lines, e.g.::

    class BedAlreadyReserved(Conflict):
        code = "bed_already_reserved"

:class:`~ght_shared.errors.InvalidInput` (422 naming the field and the rule),
``NotFound``, ``Conflict`` and ``Forbidden`` come from :mod:`ght_shared.errors`.
"""

from __future__ import annotations

from ght_shared.errors import InvalidInput as InvalidInput
