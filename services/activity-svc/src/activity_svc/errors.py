"""Errors of activity-svc: nouns of what went wrong, each with its status and stable code."""

from __future__ import annotations

from ght_shared.errors import Conflict, DomainError, NotFound
from ght_shared.errors import InvalidInput as InvalidInput  # the 422 naming a field and a rule


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


class AlertClosed(Conflict):
    code = "alert_closed"


class CommentNotFound(NotFound):
    code = "comment_not_found"


class TooManyComments(Conflict):
    code = "too_many_comments"


class ImportRejected(DomainError):
    """Rows were rejected and the caller asked for all or nothing."""

    status = 422
    code = "import_rejected"
    title = "Import rejected"


class InvalidRows(DomainError):
    """Rows of a file break a rule: nothing done (``errors``: line, field, rule, message)."""

    status = 422
    code = "validation_failed"
    title = "Invalid request"


class UnsupportedMediaType(DomainError):
    status = 415
    code = "unsupported_media_type"
    title = "Unsupported media type"


class ImportTooLarge(DomainError):
    """A file beyond one of the import's limits, once decompressed (``field``, ``limit``)."""

    status = 413
    code = "payload_too_large"
    title = "Payload too large"
