"""The sweep directory, a local path or a URI: `<storage>/<name>/` holds one Parquet row per trial and, skipped by
Parquet readers (leading underscore), the stored spec, teacher, driver record, Optuna journal, artifacts and Tune's
experiment."""

import shutil
from pathlib import Path

import pyarrow.fs as pafs

from pdd.errors import SweepError
from pdd.full_data import FULL_DATA
from pdd.io import atomic_path
from pdd.results import ARTIFACTS
from pdd.sweep import SweepSpec

# Beside the rows, so with a leading underscore: Parquet readers of the directory skip them (as _artifacts/).
SPEC_FILE = "_sweep.json"
TEACHER_FILE = "_teacher.pt"
DRIVER_FILE = "_driver.json"  # the last driver run's start, end, stage times and trial slots (pdd sweep overhead)
TUNE_DIR = "_tune"
EXPERIMENT = "sweep"  # the Tune experiment in TUNE_DIR
JOURNAL_FILE = "_optuna-journal.log"  # the driver's copy of every study, for `pdd sweep dashboard` (runner.journal)



def is_uri(location: str) -> bool:
    return "://" in location


def sweep_root(storage: str, name: str) -> str:
    return f"{storage.rstrip('/')}/{name}" if is_uri(storage) else str(Path(storage).resolve() / name)


def filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    return pafs.FileSystem.from_uri(root) if is_uri(root) else (pafs.LocalFileSystem(), root)


def read(root: str, name: str) -> bytes | None:
    fs, base = filesystem(root)
    if fs.get_file_info(f"{base}/{name}").type == pafs.FileType.NotFound:
        return None
    with fs.open_input_stream(f"{base}/{name}") as stream:
        return stream.read()


def write(root: str, name: str, data: bytes) -> None:
    """Write a sweep-directory file: atomically on a local path; an object store replaces an object in one step."""
    if not is_uri(root):
        with atomic_path(Path(root) / name) as tmp:
            tmp.write_bytes(data)
        return
    fs, base = filesystem(root)
    fs.create_dir(base, recursive=True)
    with fs.open_output_stream(f"{base}/{name}") as stream:
        stream.write(data)


def local_dir(root: str) -> Path:
    """The sweep's directory on this machine: the directory itself, or for a URI its local mirror (the driver's
    copy of the rows, and its Optuna journal)."""
    return Path(root) if not is_uri(root) else mirror_dir(root.rstrip("/").rsplit("/", 1)[-1])


def mirror_dir(name: str) -> Path:
    return Path("results") / name


def rows_dir(root: str) -> Path:
    """Where this machine reads a sweep's rows: the directory itself, or a mirror of a remote one."""
    if not is_uri(root):
        return Path(root)
    mirror = local_dir(root)
    mirror.mkdir(parents=True, exist_ok=True)
    fs, base = filesystem(root)
    for info in fs.get_file_info(pafs.FileSelector(base, allow_not_found=True)):
        if info.base_name.endswith(".parquet"):
            pafs.copy_files(info.path, str(mirror / info.base_name), source_filesystem=fs)
    return mirror


def prepare(spec: SweepSpec, storage: str) -> str:
    """Create the sweep directory with its spec, or accept the existing one if it holds the same spec."""
    root = sweep_root(storage, spec.name)
    saved = read(root, SPEC_FILE)
    if saved is not None and SweepSpec.model_validate_json(saved) != spec:
        raise SweepError(f"{root} holds sweep '{spec.name}' with a different spec; rename the sweep, or continue "
                         f"the stored one with `pdd sweep resume {root}`")
    if saved is None:
        write(root, SPEC_FILE, spec.model_dump_json(indent=1).encode())
    return root


def load_saved(root: str) -> SweepSpec:
    saved = read(root, SPEC_FILE)
    if saved is None:
        raise SweepError(f"no sweep at {root} (no {SPEC_FILE}); start one with `pdd sweep run FILE`")
    return SweepSpec.model_validate_json(saved)


# What another machine needs to report on a sweep and to continue it travels: the rows, the spec and teacher they
# were run with, the journal, each trial's set and audit pairs, the checkpoints of trials still in flight (each
# trial mirrors Tune's into its artifact folder and drops them once its rows are written), and the full-data
# accuracies recorded beside them. Tune's state holds this machine's paths, and the driver record times this
# machine's run.
LEFT_BEHIND = (DRIVER_FILE,)


def export(root: str, dest: Path) -> int:
    """Copy the sweep directory root (local) to dest, less what only this machine can use; returns the files
    copied. `pdd sweep resume dest` continues the sweep from its rows, on any machine."""
    if is_uri(root):
        raise SweepError(f"{root}: export copies a local sweep directory; sync an object store's with its own tools")
    source = Path(root)
    if not (source / SPEC_FILE).is_file():
        raise SweepError(f"no sweep at {root} (no {SPEC_FILE})")
    copied = 0
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        in_place = len(relative.parts) == 1 or relative.parts[0] in (ARTIFACTS, FULL_DATA)  # so not Tune's folder
        if not path.is_file() or not in_place or path.name.startswith(".") or set(relative.parts) & set(LEFT_BEHIND):
            continue
        with atomic_path(dest / relative) as tmp:
            shutil.copyfile(path, tmp)
        copied += 1
    for stale in Path(dest).glob(f"{ARTIFACTS}/*/checkpoints/*"):  # its trial has finished since the last export
        if not (source / stale.relative_to(dest)).exists():
            stale.unlink()
    return copied
