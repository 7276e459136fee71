"""Telling someone when a run fails: a log line always, a webhook post when one is configured.

The pipeline runs unattended at night; a failed run that nobody hears about means stale
dashboards in the morning. The message is short and carries no settings, so no secret leaves.
"""

import logging

import dagster as dg
import httpx

from incomaker_elt.settings import Settings

logger = logging.getLogger(__name__)

_MAX_ERROR_CHARS = 500
_WEBHOOK_TIMEOUT_SECONDS = 10.0


def failure_message(job_name: str, run_id: str, error: str | None, failed_steps: list[str]) -> str:
    """One paragraph a person can act on: what failed, where, and where to look."""
    error = " ".join((error or "no error message").split())
    if len(error) > _MAX_ERROR_CHARS:
        error = error[: _MAX_ERROR_CHARS - 1] + "…"
    steps = f" Failed steps: {', '.join(failed_steps)}." if failed_steps else ""
    return (
        f"incomaker-elt: run {run_id[:8]} of job {job_name} failed.{steps} {error} "
        "Open the run in the Dagster UI (make ui) for logs and check results."
    )


def post_to_webhook(url: str, message: str, transport: httpx.BaseTransport | None = None) -> bool:
    """Post `{"text": message}` (the shape Slack, Teams and Mattermost accept); True on 2xx."""
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
            {e.step_key for e in context.get_step_failure_events() if e.step_key is not None}
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
