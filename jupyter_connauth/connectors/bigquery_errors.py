"""BigQuery's errors → what to do about them (no token in any message)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..core.errors import AccessDenied, ConnAuthError, QueryError
from ..core.redact import redact
from .base import ConnectionInfo

DEFAULT_ENDPOINT = "https://bigquery.googleapis.com"

_REQUEST_PREFIX_RE = re.compile(r"^\d{3} (?:GET|POST|PUT|PATCH|DELETE) \S+: ")
_FOOTER_RE = re.compile(r"\n\nLocation: [^\n]*\nJob ID: [^\n]*\n?$")


def scrub(text: str) -> str:
    """A driver message without any token value or token-shaped string (core/redact.py)."""
    return redact(text)


# -- error helpers ----------------------------------------------------------------------


def exception_chain(exc: BaseException) -> list[BaseException]:
    """The exception, what it wraps (RetryError.cause, __cause__, __context__)."""
    out: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or any(e is seen for seen in out) or len(out) > 10:
            continue
        out.append(e)
        cause = getattr(e, "cause", None)
        todo.extend(
            [
                cause if isinstance(cause, BaseException) else None,
                e.__cause__,
                e.__context__,
            ]
        )
    return out


def is_auth_failure(exc: BaseException) -> bool:
    module = type(exc).__module__
    name = type(exc).__name__
    if module.startswith("google.auth") and name == "RefreshError":
        return True
    if module.startswith("google.api_core") and name in ("Unauthorized", "Unauthenticated"):
        return True
    return getattr(exc, "code", None) == 401 and module.startswith("google.")


def is_network_failure(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    module = type(exc).__module__
    name = type(exc).__name__
    if module.startswith(("requests", "urllib3")) and (
        "Connection" in name or "Timeout" in name or name in ("MaxRetryError", "ProxyError")
    ):
        return True
    return module.startswith("google.auth") and name == "TransportError"


def network_reason(chain: list[BaseException]) -> str:
    text = " ".join(str(e) for e in chain)
    if "Connection refused" in text or any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "connection refused"
    if any(isinstance(e, TimeoutError) or "Timeout" in type(e).__name__ for e in chain):
        return "the connection timed out"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "the host name does not resolve"
    if "timed out" in text.lower():
        return "the connection timed out"
    return "the connection failed"


def endpoint_of(info: ConnectionInfo) -> str:
    options = info.driver_options.get("client_options")
    endpoint = None
    if isinstance(options, Mapping):
        endpoint = options.get("api_endpoint")
    else:
        endpoint = getattr(options, "api_endpoint", None)
    return str(endpoint or DEFAULT_ENDPOINT)


def _api_message(exc: Any) -> str:
    """BigQuery's own message, without the request line and the job footer."""
    message = ""
    errors = getattr(exc, "errors", None) or []
    if errors and isinstance(errors[0], Mapping):
        message = str(errors[0].get("message") or "")
    if not message:
        message = str(getattr(exc, "message", "") or str(exc))
        message = _FOOTER_RE.sub("", message)
        message = _REQUEST_PREFIX_RE.sub("", message)
    return scrub(message.strip())


def _reasons(exc: Any) -> set[str]:
    errors = getattr(exc, "errors", None) or []
    return {str(e.get("reason")) for e in errors if isinstance(e, Mapping) and e.get("reason")}


def _job_suffix(exc: Any) -> str:
    job = getattr(exc, "query_job", None)
    job_id = getattr(job, "job_id", None)
    return f" (job {job_id})" if job_id else ""


def translate_api_error(exc: Any, exceptions: Any, info: ConnectionInfo) -> ConnAuthError | None:
    message = _api_message(exc)
    reasons = _reasons(exc)
    project = info.params.get("project") or "the project"
    if "bytesBilledLimitExceeded" in reasons:  # google-cloud-bigquery raises it as a 500
        return QueryError(
            f"BigQuery: {message}{_job_suffix(exc)}",
            "nothing ran and nothing was billed: read fewer columns or partitions "
            "(--dry-run shows the bytes), or raise %config ConnAuthMagics.maximum_bytes_billed",
            code="bytes_billed_limit",
        )
    if _is_storage_api_error(exc, message):
        return _storage_api_error(exc, exceptions, message, project)
    if isinstance(exc, exceptions.Forbidden | exceptions.PermissionDenied):
        if reasons & {"quotaExceeded", "rateLimitExceeded"}:
            return ConnAuthError(
                f"BigQuery quota exceeded: {message}",
                "wait and run the query again, or ask a BigQuery admin to raise the quota",
                code="quota_exceeded",
            )
        if "billingNotEnabled" in reasons:
            return AccessDenied(
                f"BigQuery refused the job: {message}",
                f"enable billing on project {project}, or set the connection's project to one "
                "with billing",
            )
        if "responseTooLarge" in reasons:
            return QueryError(
                f"BigQuery could not return the result: {message}",
                "add a LIMIT or aggregate in SQL",
                code="response_too_large",
            )
        if "jobs.create" in message:
            fix = (
                f"ask a BigQuery admin to grant the user roles/bigquery.jobUser on project "
                f"{project} (and roles/bigquery.dataViewer on the datasets to query)"
            )
            if info.auth == "token-exchange":  # BigQuery through Workforce Identity Federation
                fix += (
                    "; through Workforce Identity Federation the member is the workforce "
                    "principal: principal://iam.googleapis.com/locations/global/"
                    "workforcePools/POOL/subject/SUBJECT, or principalSet://"
                    "iam.googleapis.com/locations/global/workforcePools/POOL/* for the pool"
                )
        else:
            fix = (
                "ask a BigQuery admin to grant the user roles/bigquery.dataViewer on the dataset "
                f"(and roles/bigquery.jobUser on project {project})"
            )
        return AccessDenied(
            f"BigQuery permission denied{_job_suffix(exc)}: {message}",
            fix,
            code="permission_denied",
        )
    if isinstance(exc, exceptions.NotFound):
        return QueryError(
            f"BigQuery: {message}{_job_suffix(exc)}",
            "check the project, dataset and table names (`project.dataset.table`) and the "
            "connection's location: datasets in another location are not found from it",
            code="not_found",
        )
    if isinstance(exc, exceptions.BadRequest | exceptions.InvalidArgument):
        sql_fix = None
        if re.search(r"(?i)query parameter|not provided for the following parameters", message):
            sql_fix = "pass every @name the SQL uses in --params (a dict), and only those"
        return QueryError(f"BigQuery: {message}{_job_suffix(exc)}", sql_fix)
    if isinstance(exc, exceptions.ServerError | exceptions.DeadlineExceeded):
        return ConnAuthError(
            f"BigQuery failed: {message}",
            "try again in a minute; if it persists, check https://status.cloud.google.com",
            code="warehouse_error",
        )
    return None


def _is_storage_api_error(exc: Any, message: str) -> bool:
    text = f"{message} {exc}".lower()
    return "bigquerystorage" in text or "readsession" in text or "read session" in text


def _storage_api_error(
    exc: Any, exceptions: Any, message: str, project: str
) -> ConnAuthError | None:
    """The Storage Read API (gRPC) failed while downloading a result."""
    off = "or set use_storage_api: False in the connection's driver_options (slower REST download)"
    if isinstance(exc, exceptions.Forbidden | exceptions.PermissionDenied):
        return AccessDenied(
            f"BigQuery Storage Read API permission denied: {message}",
            f"ask a BigQuery admin to grant the user roles/bigquery.readSessionUser on project "
            f"{project}, {off}",
            code="permission_denied",
        )
    if isinstance(exc, exceptions.ServiceUnavailable | exceptions.DeadlineExceeded):
        return ConnAuthError(
            f"Cannot reach the BigQuery Storage Read API: {message}",
            f"check network access to bigquerystorage.googleapis.com:443 (gRPC), {off}",
            code="warehouse_unreachable",
        )
    return None
