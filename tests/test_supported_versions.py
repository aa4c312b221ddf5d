"""setup.cfg's lower bounds are the versions CI tests, and the lowest-versions test list names existing tests."""

import configparser
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lower_bounds() -> dict[str, str]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    bounds = {}
    for requirement in config["options"]["install_requires"].split():
        match = re.fullmatch(r"([A-Za-z0-9_-]+)(\[[^\]]*\])?>=([0-9.]+)", requirement)
        if match:
            bounds[match.group(1)] = match.group(3)
    return bounds


def test_setup_lower_bounds_are_the_versions_ci_installs():
    ci = (ROOT / ".ci" / "run").read_text()
    tested = dict(re.findall(r"^LOWEST_(MONAI|IGNITE)=([0-9.]+)$", ci, flags=re.M))
    assert tested == {"MONAI": "1.5.2", "IGNITE": "0.4.11"}
    bounds = _lower_bounds()
    assert bounds["monai"] == tested["MONAI"] and bounds["pytorch-ignite"] == tested["IGNITE"]
    assert bounds["torch"] == "2.5"  # by API, see docs/decisions.md "Supported versions"
    assert '"monai[' in ci and '==$LOWEST_MONAI"' in ci and '"pytorch-ignite==$LOWEST_IGNITE"' in ci


def test_lowest_versions_list_names_existing_tests():
    lines = (ROOT / ".ci" / "lowest_versions.txt").read_text().splitlines()
    nodes = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    assert len(nodes) >= 10
    for node in nodes:
        path, _, name = node.partition("::")
        assert (ROOT / path).is_file(), node
        if name:
            assert f"def {name.split('[')[0]}(" in (ROOT / path).read_text(), node
