"""Shared fixtures. Tests never download: real data comes from the shared CIFAR-10 JPEG archive."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pdd.data import write_image_folder_slice

# CI checks out ../shared beside the repo; PDD_SHARED points at that shared dir when it lives elsewhere.
SHARED_DIR = Path(os.environ.get("PDD_SHARED") or Path(__file__).parents[1] / "../shared").resolve()
CIFAR_ARCHIVE = SHARED_DIR / "datasets" / "cifar10-jpeg.tar.gz"


@pytest.fixture(scope="session", autouse=True)
def pdd_cache(tmp_path_factory: pytest.TempPathFactory):
    """Point PDD_CACHE at a session temp dir so no test writes to ~/.cache; restored afterwards."""
    previous = os.environ.get("PDD_CACHE")
    cache = tmp_path_factory.mktemp("pdd-cache")
    os.environ["PDD_CACHE"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("PDD_CACHE", None)
    else:
        os.environ["PDD_CACHE"] = previous


@pytest.fixture(scope="session")
def cifar_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ImageFolder dir with the first 30 train and 10 test images of each CIFAR-10 class. Read-only: copy to edit."""
    if not CIFAR_ARCHIVE.is_file():
        pytest.fail(f"shared CIFAR-10 archive not found at {CIFAR_ARCHIVE}; "
                    "put ../shared beside the repo or set PDD_SHARED")
    return write_image_folder_slice(CIFAR_ARCHIVE, tmp_path_factory.mktemp("data") / "cifar10-slice", 30, 10)


@pytest.fixture(scope="session")
def smoke_teacher(cifar_slice: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A teacher trained for one smoke epoch on the slice: wiring, not accuracy."""
    import torch

    from pdd.config import TeacherConfig
    from pdd.teacher import save_teacher, train_teacher
    from pdd.trial import cached_dataset

    cfg = TeacherConfig(budget="smoke", data={"source": str(cifar_slice), "val_per_class": 5})
    checkpoint = train_teacher(cfg, cached_dataset(str(cifar_slice)), torch.device("cpu"))
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_teacher(path, checkpoint)
    return path
