"""Telling someone when a run fails: a log line always, a webhook post when one is configured.

The pipeline runs unattended at night; a failed run that nobody hears about means stale
dashboards in the morning. The message is short and carries no settings, so no secret leaves.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import dagster as dg

from incomaker_elt.contract.settings import Settings

if TYPE_CHECKING:  # httpx is imported when a post is sent, not with the definitions
    import httpx

logger = logging.getLogger(__name__)

_MAX_ERROR_CHARS = 500
_WEBHOOK_TIMEOUT_SECONDS = 10.0

_WRAPPERS = (
    "Exceeded max_retries of",
    "Error occurred while executing",
    "RetryRequested",
    "dagster._core.errors.DagsterExecutionStepExecutionError",
)
"""Dagster's messages around a step's own error: they say that it failed, not why."""

_DBT_ERRORS = "Errors parsed from dbt logs:"


def _readable(message: str, cls_name: str | None) -> str:
    """One line: dbt's parsed errors rather than the dbt command line, no Failure class path."""
    if _DBT_ERRORS in message:
        message = message.split(_DBT_ERRORS, 1)[1]
    text = " ".join(message.split())
    prefix = f"{cls_name}: " if cls_name else ""
    if prefix and text.startswith("dagster.") and prefix in text:
        text = text.split(prefix, 1)[-1]
    if len(text) > _MAX_ERROR_CHARS:
        text = text[: _MAX_ERROR_CHARS - 1] + "…"
    return text


def step_failure_cause(failure: Any) -> str:
    """Why a step failed, from its STEP_FAILURE data (`event.step_failure_data`).

    After its retries Dagster reports "Exceeded max_retries of 2", and an exception in user code
    as "Error occurred while executing op ...": the cause is further down the error's chain. A
    `dg.Failure` carries its own description, which is written for people: that comes first.
    """
    user = getattr(failure, "user_failure_data", None)
    if user is not None and user.description:
        return _readable(user.description, None)
    error = getattr(failure, "error", None)
    seen: set[int] = set()
    fallback = "failed without an error message"
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        message = (error.message or "").strip()
        if message:
            if not any(wrapper in message.splitlines()[0] for wrapper in _WRAPPERS):
                return _readable(message, error.cls_name)
            fallback = _readable(message, error.cls_name)
        error = error.cause or error.context
    return fallback


def failure_message(job_name: str, run_id: str, error: str | None, failed_steps: list[str]) -> str:
    """One paragraph a person can act on: what failed, where, and where to look."""
    error = _readable(error or "no error message", None)
    steps = f" Failed steps: {', '.join(failed_steps)}." if failed_steps else ""
    return (
        f"incomaker-elt: run {run_id[:8]} of job {job_name} failed.{steps} {error} "
        "Open the run in the Dagster UI (make ui) for logs and check results."
    )


def post_to_webhook(url: str, message: str, transport: httpx.BaseTransport | None = None) -> bool:
    """Post `{"text": message}` (the shape Slack, Teams and Mattermost accept); True on 2xx."""
    import httpx

    try:
        with httpx.Client(timeout=_WEBHOOK_TIMEOUT_SECONDS, transport=transport) as client:
            response = client.post(url, json={"text": message})
    except httpx.HTTPError as exc:
        # The URL may hold a secret path, so only the error's type is logged.
        logger.warning("run-failure webhook could not be reached (%s)", type(exc).__name__)
        return False
    if response.is_success:
        return True
    logger.warning("run-failure webhook answered HTTP %s", response.status_code)
    return False


def build_run_failure_sensor(
    settings: Settings, transport: httpx.BaseTransport | None = None
) -> dg.SensorDefinition:
    @dg.run_failure_sensor(
        name="run_failure_alert",
        description=(
            "Logs every failed run and, when INCOMAKER_ALERT_WEBHOOK_URL is set, posts a short "
            "message to that webhook."
        ),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30,
    )
    def run_failure_alert(context: dg.RunFailureSensorContext) -> None:
        failed_steps = sorted(
            {
                f"{e.step_key} ({step_failure_cause(e.step_failure_data)})"
                for e in context.get_step_failure_events()
                if e.step_key is not None
            }
        )
        message = failure_message(
            context.dagster_run.job_name,
            context.dagster_run.run_id,
            context.failure_event.message,
            failed_steps,
        )
        context.log.error(message)
        if settings.alert_webhook_url:
            post_to_webhook(settings.alert_webhook_url, message, transport=transport)

    return run_failure_alert
