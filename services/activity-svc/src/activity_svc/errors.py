"""Errors of activity-svc: nouns of what went wrong, each with its status and stable code."""

from __future__ import annotations

from ght_shared.errors import Conflict, DomainError, NotFound


class InvalidInput(DomainError):
    """A request that is well formed but breaks a rule of the domain (422)."""

    status = 422
    code = "invalid_input"
    title = "Invalid input"

    def __init__(self, detail: str, *, field: str, rule: str, **extra: object) -> None:
        super().__init__(
            detail, errors=[{"field": field, "rule": rule, "message": detail}], **extra
        )


class OrgUnitNotFound(NotFound):
    code = "org_unit_not_found"


class OrgUnitConflict(Conflict):
    code = "org_unit_conflict"


class IndicatorNotFound(NotFound):
    code = "indicator_not_found"


class ImportNotFound(NotFound):
    code = "import_not_found"


class TargetNotFound(NotFound):
    code = "target_not_found"


class AlertRuleNotFound(NotFound):
    code = "alert_rule_not_found"


class AlertNotFound(NotFound):
    code = "alert_not_found"


class AlertCleared(Conflict):
    code = "alert_cleared"


class ImportRejected(DomainError):
    """Rows were rejected and the caller asked for all or nothing."""

    status = 422
    code = "import_rejected"
    title = "Import rejected"


class UnsupportedMediaType(DomainError):
    status = 415
    code = "unsupported_media_type"
    title = "Unsupported media type"
