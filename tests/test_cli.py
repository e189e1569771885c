"""Bad input gets one clear line on stderr, a non-zero exit, and never a traceback."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pdd.cli import main


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    err = capsys.readouterr().err
    return code, err


def assert_one_clean_line(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("pdd: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def smoke_args(cifar_slice, smoke_teacher, tmp_path):
    return ["trial", "--budget", "smoke", "--pipc", "10", "--data", str(cifar_slice),
            "--results", str(tmp_path / "results"), "--teacher", str(smoke_teacher),
            "--config", str(write_val_config(tmp_path))]


def write_val_config(tmp_path: Path) -> Path:
    path = tmp_path / "trial.yaml"
    path.write_text("data:\n  val_per_class: 5\n")
    return path


@pytest.mark.parametrize("flags, fragments", [
    (["--method", "nope"], ["method", "unknown method 'nope'", "pdd"]),
    (["--ipc", "0"], ["ipc", "greater than or equal to 1"]),
    (["--ipc", "-3"], ["ipc"]),
    (["--pipc", "600"], ["pipc=600", "exceeds"]),
    (["--pipc", "lots"], ["--pipc"]),
    (["--bogus"], ["No such option", "--bogus"]),
    (["--ipc", "two"], ["--ipc", "valid integer"]),
])
def test_bad_trial_input_gets_one_line(capsys, smoke_args, flags, fragments):
    code, err = run_cli(capsys, *smoke_args, *flags)
    assert code == 2
    assert_one_clean_line(err, *fragments)


@pytest.mark.parametrize("flags, fragments", [
    (["--precision", "fp16"], ["precision", "'fp32' or 'bf16'"]),
    (["--iterations", "0"], ["--iterations"]),
    (["--sweep", "no/such/sweep"], ["no/such/sweep"]),
    (["--tables", "no/such/dir"], ["no/such/dir/README.md", "no README"]),
])
def test_bad_bench_input_gets_one_line(capsys, flags, fragments):
    code, err = run_cli(capsys, "bench", *flags)
    assert code != 0
    assert_one_clean_line(err, *fragments)


def test_unknown_key_in_a_config_file_is_named(capsys, smoke_args, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("alpah: 0.1\n")
    code, err = run_cli(capsys, *smoke_args, "--config", str(bad))
    assert code == 2
    assert_one_clean_line(err, "alpah", "unknown field")


def test_missing_dataset(capsys, tmp_path):
    code, err = run_cli(capsys, "trial", "--method", "dm", "--budget", "smoke", "--data", str(tmp_path / "nowhere"))
    assert code == 2
    assert_one_clean_line(err, "not found", "nowhere")


def test_corrupt_dataset_archive(capsys, tmp_path):
    archive = tmp_path / "cifar.tar.gz"
    archive.write_bytes(b"\x1f\x8b this is not really gzip" * 100)
    code, err = run_cli(capsys, "trial", "--method", "dm", "--budget", "smoke", "--data", str(archive))
    assert code == 2
    assert_one_clean_line(err, "corrupt", "cifar.tar.gz")


def test_teacher_for_another_architecture(capsys, smoke_args, smoke_teacher, tmp_path):
    other = tmp_path / "wide.yaml"
    other.write_text("data:\n  val_per_class: 5\nteacher_model:\n  width: 64\n")
    code, err = run_cli(capsys, *smoke_args, "--config", str(other))
    assert code == 2
    assert_one_clean_line(err, "teacher", "width 128", "width 64")


def test_teacher_for_another_dataset(capsys, smoke_args, cifar_slice, tmp_path):
    other_data = tmp_path / "other-data"
    shutil.copytree(cifar_slice, other_data)
    victim = next((other_data / "train" / "cat").iterdir())
    victim.write_bytes(next((other_data / "train" / "dog").iterdir()).read_bytes())
    args = [a if a != str(cifar_slice) else str(other_data) for a in smoke_args]
    code, err = run_cli(capsys, *args)
    assert code == 2
    assert_one_clean_line(err, "teacher", "trained on dataset")


def test_corrupt_teacher_file(capsys, smoke_args, tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    args = [a if not a.endswith("teacher.pt") else str(broken) for a in smoke_args]
    code, err = run_cli(capsys, *args)
    assert code == 2
    assert_one_clean_line(err, "cannot read teacher checkpoint", "broken.pt")


def test_teacher_show_prints_the_metadata_and_one_line_for_a_foreign_file(capsys, smoke_teacher, tmp_path):
    assert main(["teacher", "show", str(smoke_teacher)]) == 0
    shown = capsys.readouterr().out
    for key in ("dataset_hash", "normalization", "stationarity_cosine", "stationarity_relative_gap",
                "stationarity_grad_norm", "stationarity_train_loss", "stationarity_images"):
        assert key in shown, key
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    code, err = run_cli(capsys, "teacher", "show", str(broken))
    assert code == 2
    assert_one_clean_line(err, "cannot read teacher checkpoint", "broken.pt")


def test_dkkt_method_without_a_teacher(capsys, smoke_args):
    args = smoke_args[: smoke_args.index("--teacher")] + smoke_args[smoke_args.index("--teacher") + 2:]
    code, err = run_cli(capsys, *args, "--method", "pdd")
    assert code == 2
    assert_one_clean_line(err, "needs a teacher", "--teacher")


def test_evaluate_rejects_a_set_of_the_wrong_shape(capsys, cifar_slice, tmp_path):
    path = tmp_path / "set.pt"
    torch.save({"images": torch.zeros(10, 3, 28, 28), "labels": torch.arange(10)}, path)
    code, err = run_cli(capsys, "evaluate", str(path), "--budget", "smoke", "--data", str(cifar_slice))
    assert code == 2
    assert_one_clean_line(err, "shape", "(3, 28, 28)")


def test_installed_entry_point_prints_one_line_for_bad_flags():
    """The console script, not just main(): what a user actually runs."""
    pdd = Path(sys.executable).parent / "pdd"
    done = subprocess.run([str(pdd), "trial", "--ipc", "0", "--budget", "smoke", "--method", "dm"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert_one_clean_line(done.stderr, "ipc")


def test_a_smoke_trial_from_the_command_line(capsys, smoke_args):
    code = main([*smoke_args, "--method", "pdd", "--pipc", "10"])
    out = capsys.readouterr().out
    assert code == 0
    assert "test accuracy" in out and "val accuracy" in out


def test_evaluate_scores_a_folder_of_pngs_made_elsewhere(capsys, cifar_slice, tmp_path):
    from PIL import Image

    for label, name in enumerate(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                                  "truck"]):
        folder = tmp_path / "pngs" / (name if label % 2 else str(label))  # class names or indices both work
        folder.mkdir(parents=True)
        pixels = torch.randint(0, 255, (32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(label))
        Image.fromarray(pixels.numpy()).save(folder / "0.png")
    code = main(["evaluate", str(tmp_path / "pngs"), "--budget", "smoke", "--data", str(cifar_slice),
                 "--val-per-class", "5"])
    out = capsys.readouterr().out
    assert code == 0
    assert "test" in out and "over 2 models" in out


@pytest.mark.parametrize(("flags", "fragment"), [
    (["--final-optimizer", "rmsprop"], "final_optimizer"),
    (["--epochs", "0"], "epochs + final_epochs must be at least 1"),
    (["--final-lr", "0"], "final_lr"),
])
def test_a_bad_teacher_recipe_is_one_line_naming_the_field(capsys, tmp_path, flags, fragment):
    code, err = run_cli(capsys, "teacher", "train", "--out", str(tmp_path / "t.pt"), *flags)
    assert code == 2
    assert_one_clean_line(err, fragment)
