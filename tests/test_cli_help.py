"""``python -m custom_nets --help``: the program name, one line per command, a description for every flag."""

import inspect
import subprocess
import sys
from pathlib import Path

from fire import docstrings

from custom_nets import cli

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> dict:
    """The command table ``main`` hands to fire (name -> function or group)."""
    seen = {}
    original = cli._fire
    cli._fire = seen.update
    try:
        cli.main()
    finally:
        cli._fire = original
    return seen


def _functions(commands: dict, prefix: str = ""):
    for name, value in commands.items():
        if isinstance(value, dict):
            yield from _functions(value, f"{prefix}{name} ")
        else:
            yield prefix + name, value


def _help(*args) -> str:
    done = subprocess.run([sys.executable, "-m", "custom_nets", *args, "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr  # fire writes help to stdout or stderr depending on the version


def test_every_command_has_a_summary_and_every_flag_a_description():
    commands = _commands()
    assert {"demo", "preprocess", "export_bundle", "evaluate", "gpu_check", "study"} <= set(commands)
    undocumented = []
    for name, fn in _functions(commands):
        parsed = docstrings.parse(inspect.getdoc(fn))
        described = {a.name for a in parsed.args or [] if a.description}
        for names in [a.name.split(", ") for a in parsed.args or []]:  # "rank, world_size: ..." documents both
            described.update(names)
        params = [p for p in inspect.signature(fn).parameters if p not in ("self",)]
        undocumented += [f"{name} --{p}" for p in params if p not in described]
        assert parsed.summary and "\n" not in parsed.summary, name
    # the study group's functions are documented in custom_nets.study; only check this module's commands
    assert [u for u in undocumented if not u.startswith("study ")] == []


def test_help_shows_the_program_name_and_one_line_per_command():
    text = _help()
    assert "NAME\n    python -m custom_nets - S3D pre-training, fine-tuning, evaluation and model export" in text
    assert "SYNOPSIS\n    python -m custom_nets GROUP | COMMAND" in text and "__main__.py" not in text
    for name, fn in _commands().items():
        summary = inspect.getdoc(fn).splitlines()[0]
        assert f"     {name}\n       {summary}\n" in text


def test_command_help_describes_each_flag():
    text = _help("export_bundle")
    assert "SYNOPSIS\n    python -m custom_nets export_bundle RUN_DIR OUTPUT_DIR <flags>" in text
    assert "    -o, --overwrite=OVERWRITE\n        Type: 'bool'\n        Default: False\n" \
           "        replace an existing bundle of the same name.\n" in text
    assert "    RUN_DIR\n        Type: 'str'\n        the fine-tuning run's ``output_dir``" in text
