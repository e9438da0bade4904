"""A fresh install is the tested install: constraints.txt pins what CI runs on, and CI proves it did.

pyproject.toml gives ranges (what may work); constraints.txt gives the exact versions tested, and both README
set-up commands install with it. These tests fail when the environment running them is not the locked one
(so a green CI run means the lock was tested), when a dependency is missing from the lock or pinned outside
its range, and when a README command installs without the lock.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "constraints.txt"


def lock_pins() -> dict[str, str]:
    """``{canonical name: version}``; every line that is not a comment must be ``name==version``."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(LOCK.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][A-Za-z0-9.!+-]*)", line)
        assert match, f"constraints.txt line {number} is not an exact pin: {raw!r}"
        name = canonicalize_name(match[1])
        assert name not in pins, f"constraints.txt pins {name} twice"
        pins[name] = match[2]
    return pins


def pyproject_requirements() -> dict[str, list[Requirement]]:
    """Requirements by group: ``""`` for the dependencies, then each extra by name."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    groups = {"": project["dependencies"], **project.get("optional-dependencies", {})}
    return {group: [Requirement(text) for text in texts] for group, texts in groups.items()}


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def test_every_pyproject_dependency_is_pinned_in_the_lock_within_its_range():
    pins = lock_pins()
    problems = []
    for group, requirements in pyproject_requirements().items():
        for requirement in requirements:
            name = canonicalize_name(requirement.name)
            where = f"[{group}] {requirement}" if group else str(requirement)
            if name not in pins:
                problems.append(f"{where}: not in constraints.txt")
            elif not requirement.specifier.contains(pins[name], prereleases=True):
                problems.append(f"{where}: constraints.txt pins {pins[name]}, outside the range")
    assert not problems, "\n".join(problems)


def test_the_lock_fits_any_build_of_torch():
    """A CUDA user installs torch from another index: no local tag (``+cpu``) and no CUDA-only packages."""
    pins = lock_pins()
    assert "+" not in pins["torch"], "pin torch without its local tag: torch==2.13.0 matches 2.13.0+cu128 too"
    cuda_only = sorted(name for name in pins if name.startswith("nvidia-") or name == "triton")
    assert not cuda_only, f"constraints.txt pins packages of one torch build: {cuda_only}"
    # pip's `==` ignores the local tag of the installed version, which is what lets a CUDA build stand.
    assert Requirement(f"torch=={pins['torch']}").specifier.contains(f"{pins['torch']}+cu128")


def test_the_distributions_pyproject_names_are_installed_at_their_locked_versions():
    """CI installs with the lock: a mismatch here means the run did not test the locked versions."""
    pins = lock_pins()
    problems = []
    for group, requirements in pyproject_requirements().items():
        for requirement in requirements:
            version = installed_version(requirement.name)
            locked = pins.get(canonicalize_name(requirement.name))
            if version is None:
                if not group:  # an extra may be left out; a dependency may not
                    problems.append(f"{requirement.name}: not installed (constraints.txt: {locked})")
            elif locked is not None and Version(version).public != Version(locked).public:
                problems.append(f"{requirement.name}: installed {version}, constraints.txt {locked}")
    assert not problems, "not the tested versions:\n" + "\n".join(problems)


def test_every_installed_distribution_the_lock_names_is_at_its_locked_version():
    """What the app's dependencies bring (tokenizers, huggingface-hub, numpy ...) is tested at the locked
    versions too."""
    problems = []
    for name, locked in sorted(lock_pins().items()):
        version = installed_version(name)
        if version is not None and Version(version).public != Version(locked).public:
            problems.append(f"{name}: installed {version}, constraints.txt {locked}")
    assert not problems, "not the tested versions:\n" + "\n".join(problems)


def test_both_readme_set_up_commands_install_with_the_lock():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)
    set_up = [c for c in commands if c.startswith("python3 -m venv") and "pip install" in c]
    assert len(set_up) >= 2, "the README's run and test commands"
    test_command = readme.split("<!-- test-command -->", 1)[1].split("```bash\n", 1)[1].split("\n", 1)[0]
    assert test_command in set_up
    for command in set_up:
        for pip_install in re.findall(r"pip install [^&\n]*", command):
            if "--index-url" not in pip_install:  # torch from another index: the lock applies next
                assert "-c constraints.txt" in pip_install, pip_install
