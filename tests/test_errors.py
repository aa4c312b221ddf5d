"""Configuration and data errors end a run with the project's own message, not a long traceback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from custom_nets import errors
from custom_nets.config import epochs_for
from custom_nets.errors import ConfigError, error_block, excepthook, find_project_error, project_error

ROOT = Path(__file__).resolve().parents[1]
TRAIN = "bundles/s3d_pretrain/configs/train.yaml"
POINTER = "(full traceback: set S3D_DEBUG=1)"


def _caught(fn, *args):
    try:
        fn(*args)
    except Exception as err:  # noqa: BLE001 - the test inspects whatever was raised
        return err
    raise AssertionError("nothing raised")


def _wrapped(fn, *args):
    """What MONAI does with an error inside a config expression: RuntimeError(...) from err."""
    try:
        fn(*args)
    except Exception as err:
        try:
            raise RuntimeError("Failed to evaluate ConfigExpression: ...") from err
        except RuntimeError as wrapper:
            return wrapper
    raise AssertionError("nothing raised")


def _not_ours(text):
    raise ValueError(text)


def test_which_errors_are_the_projects():
    ours = _caught(epochs_for, 0, 2)  # ConfigError (a ValueError) raised by custom_nets/config.py
    assert isinstance(ours, ConfigError) and isinstance(ours, ValueError) and project_error(ours)
    # a plain ValueError raised by a `raise` in the package (masking.py) is recognised by where it was raised
    from custom_nets.masking import BlockMaskGenerator

    plain = _caught(BlockMaskGenerator, 0)
    assert type(plain) is ValueError and project_error(plain)
    # int("x") inside the package is a bug (no `raise` statement), a ValueError raised in a test is not the package's
    assert not project_error(_caught(epochs_for, "x", 2))
    assert not project_error(_caught(_not_ours, "a message"))
    # the outermost project error of a chain is found behind MONAI's wrapper
    wrapper = _wrapped(epochs_for, 0, 2)
    assert not project_error(wrapper) and type(find_project_error(wrapper)) is ConfigError
    assert find_project_error(_wrapped(_not_ours, "x")) is None


def test_block_names_the_raising_line_and_the_message():
    err = _caught(epochs_for, 0, 2)
    line = err.__traceback__.tb_next.tb_lineno  # the raise statement in config.py
    assert error_block(err) == (
        f"ConfigError (raised at custom_nets/config.py:{line}):\n"
        "  max_steps and iterations_per_epoch must be >= 1, got 0 and 2: set --max_steps to the number of training "
        "iterations and --iterations_per_epoch to the logging epoch length (250 as in nnU-Net)."
    )


def test_hook_prints_the_block_last_and_fills_torchruns_error_file(tmp_path, monkeypatch, capsys):
    wrapper = _wrapped(epochs_for, 0, 2)
    error_file = tmp_path / "error.json"
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))
    monkeypatch.delenv("S3D_DEBUG", raising=False)
    excepthook(type(wrapper), wrapper, wrapper.__traceback__)
    printed = capsys.readouterr().err.splitlines()
    assert printed[0] == POINTER and printed[1].startswith("ConfigError (raised at custom_nets/config.py:")
    assert printed[2].startswith("  max_steps and iterations_per_epoch must be >= 1") and len(printed) == 3
    data = json.loads(error_file.read_text())["message"]  # torchrun's summary prints py_callstack
    assert data["message"].startswith("ConfigError: max_steps and iterations_per_epoch must be >= 1")
    assert data["extraInfo"]["py_callstack"] == "\n".join(printed[1:])


def test_other_errors_keep_pythons_traceback(capsys):
    wrapper = _wrapped(_not_ours, "not ours")
    seen = []
    excepthook(type(wrapper), wrapper, wrapper.__traceback__, fallback=lambda *a: seen.append(a[1]))
    assert seen == [wrapper] and capsys.readouterr().err == ""


def test_install_keeps_a_hook_someone_else_set(monkeypatch):
    other = lambda *a: None  # noqa: E731 - e.g. IPython's
    monkeypatch.setattr(sys, "excepthook", other)
    errors.install()
    assert sys.excepthook is other
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)
    errors.install()
    assert sys.excepthook is excepthook


def _bundle_run(tmp_path, *args, debug=False):
    env = {k: v for k, v in os.environ.items() if k not in ("S3D_DEBUG", "TORCHELASTIC_ERROR_FILE")}
    env.update(PYTHONUNBUFFERED="1", **({"S3D_DEBUG": "1"} if debug else {}))
    command = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", TRAIN,
               "--output_dir", str(tmp_path / "run"), *args]
    done = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=300)
    assert done.returncode == 1
    return done.stdout.rstrip("\n").splitlines()


def test_bundle_run_ends_with_the_projects_message_and_the_traceback_on_request(tmp_path):
    lines = _bundle_run(tmp_path, "--max_step", "5")
    assert lines[-3:] == [
        POINTER,
        f"ConfigError in config key 'initialize#0' of {TRAIN} (raised at custom_nets/config.py:{_raise_line()}):",
        f"  unknown setting '--max_step' on the command line: no config file ({TRAIN}) has a key 'max_step'. Did "
        "you mean --max_steps? Settings users usually change: dataset_dir, output_dir, max_steps, batch_size, "
        "patch_size, mask_ratio, device, seed.",
    ]
    assert not [line for line in lines if "Traceback" in line or "Failed to evaluate" in line]
    debug = _bundle_run(tmp_path, "--max_step", "5", debug=True)
    assert debug[-2:] == lines[-2:] and POINTER not in debug
    assert "Traceback (most recent call last):" in debug
    assert "RuntimeError: Failed to evaluate ConfigExpression: " in debug


def _raise_line() -> int:
    """Line of the raise in ``check_overrides`` that reports an unknown setting."""
    from custom_nets.config import check_overrides

    runner = "/site-packages/monai/bundle/__main__.py"
    err = _caught(check_overrides, [runner, "run", "--config_file", TRAIN, "--max_step", "5"])
    return errors._deepest_frame(err.__traceback__)[1]


def test_data_error_from_any_package_module_is_shown_the_same_way(tmp_path):
    missing = tmp_path / "no_such_folder"
    lines = _bundle_run(tmp_path, "--dataset_dir", str(missing))
    assert lines[-3] == POINTER
    assert lines[-2].startswith(f"FileNotFoundError in config key 'datalist' of {TRAIN} (raised at custom_nets/data/")
    assert str(missing) in lines[-1] and lines[-1].startswith("  ")
    assert not [line for line in lines if "Traceback" in line]
