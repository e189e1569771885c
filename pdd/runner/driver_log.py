"""The last driver run's record, and the trial-slot overhead worked out from it (pdd.overhead does the arithmetic)."""

import json
from typing import Any

import pyarrow.fs as pafs

from pdd.errors import SweepError
from pdd.overhead import Overhead, slot_overhead, tune_window
from pdd.runner.storage import DRIVER_FILE, TUNE_DIR, filesystem, read, write


def save_driver_run(root: str, record: dict[str, Any]) -> None:
    """The driver's start, end, marks and slots, so the overhead can be worked out after the fact."""
    write(root, DRIVER_FILE, json.dumps(record, indent=1).encode())


def load_driver_run(root: str) -> dict[str, Any]:
    saved = read(root, DRIVER_FILE)
    if saved is None:
        raise SweepError(f"no finished driver run recorded at {root} (no {DRIVER_FILE}); `pdd sweep run` or "
                         f"`pdd sweep resume` writes it when it ends")
    try:
        return json.loads(saved)
    except json.JSONDecodeError as error:
        raise SweepError(f"{root}/{DRIVER_FILE} is not valid JSON: {error}") from None


def trial_intervals(root: str) -> list[tuple[float, float]]:
    """(start, end) of the trial function for every trial whose final result Tune recorded."""
    fs, base = filesystem(root)
    selector = pafs.FileSelector(f"{base}/{TUNE_DIR}", recursive=True, allow_not_found=True)
    intervals = []
    for info in fs.get_file_info(selector):
        if info.base_name != "result.json":
            continue
        with fs.open_input_stream(info.path) as stream:
            lines = stream.read().decode().splitlines()
        for line in reversed(lines):
            try:
                last = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line Tune was still writing
            if "trial_function" in last:  # only a trial's final result has it: a failed trial has none
                intervals.append((last["trial_function"]["started_at"], last["trial_function"]["ended_at"]))
            break
    return intervals


def overhead(root: str) -> tuple[Overhead, Overhead | None, dict[str, Any]]:
    """The last driver run's overhead, the same over Tune's run alone, and its record (for the marks)."""
    record = load_driver_run(root)
    intervals = trial_intervals(root)
    window = tune_window(record["marks"])
    in_tune = None if window is None else slot_overhead(intervals, *window, record["slots"])
    return slot_overhead(intervals, record["started_at"], record["ended_at"], record["slots"]), in_tune, record
