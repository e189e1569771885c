"""Ray Jobs: submit a sweep to a running cluster, read its status and logs."""

import asyncio
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pdd.errors import SweepError

# Not uploaded with a submitted job: environments, outputs and caches.
JOB_EXCLUDES = [".venv", ".git", "results", "runs", "teachers", ".cache", "**/__pycache__", ".pytest_cache",
                ".ruff_cache", "*.egg-info"]



def submit(root: str, address: str, project: Path) -> str:
    """Submit `pdd sweep resume ROOT` as a Ray job with the project as working_dir; returns the job id."""
    return _job_call(address, lambda client: client.submit_job(
        entrypoint=f"python -m pdd sweep resume {shlex.quote(root)}",
        runtime_env={"working_dir": str(project), "excludes": JOB_EXCLUDES},
        metadata={"pdd_sweep": root}))


def job_info(job_id: str, address: str) -> dict[str, Any]:
    """The job's status and message, and the sweep directory it runs."""
    info = _job_call(address, lambda client: client.get_job_info(job_id))
    return {"status": info.status.value, "message": info.message, "sweep": (info.metadata or {}).get("pdd_sweep")}


def job_logs(job_id: str, address: str, follow: bool) -> Iterator[str]:
    """The job's output so far, or (follow) its output as it comes until the job ends."""
    if not follow:
        yield _job_call(address, lambda client: client.get_job_logs(job_id))
        return
    tail = _job_call(address, lambda client: client.tail_job_logs(job_id))
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(anext(tail))
            except StopAsyncIteration:
                return
    finally:
        loop.close()


def _job_call(address: str, call: Any) -> Any:
    """A Jobs API call whose failure (no server, unknown job) is one line."""
    from ray.job_submission import JobSubmissionClient

    try:
        return call(JobSubmissionClient(address))
    except (ConnectionError, RuntimeError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SweepError(f"Ray job server at {address}: {first}") from None
