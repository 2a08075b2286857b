"""The lock files: every declared dependency pinned with hashes, and used by every install."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^ ;\\]+)")


def pins(lock: str) -> dict[str, tuple[Version, list[str]]]:
    """Each pinned package of a lock file, with its version and hashes."""
    found: dict[str, tuple[Version, list[str]]] = {}
    name = ""
    for line in (ROOT / lock).read_text().splitlines():
        if match := PIN.match(line):
            name = str(canonicalize_name(match.group(1)))
            found[name] = (Version(match.group(2)), [])
        elif "--hash=sha256:" in line and name:
            found[name][1].append(line.strip())
    return found


def declared(extra: str | None) -> list[Requirement]:
    """The runtime dependencies, or those of one extra, from pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    texts = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return [Requirement(text) for text in texts]


@pytest.mark.parametrize(
    ("lock", "extras"),
    [("requirements.txt", [None]), ("requirements-dev.txt", [None, "dev"])],
)
def test_every_declared_dependency_is_pinned_within_its_range(
    lock: str, extras: list[str | None]
) -> None:
    """Each dependency in pyproject.toml is pinned in the lock at a version its range allows."""
    locked = pins(lock)
    for extra in extras:
        for requirement in declared(extra):
            name = str(canonicalize_name(requirement.name))
            assert name in locked, f"{name} missing from {lock}: run make lock"
            assert requirement.specifier.contains(locked[name][0], prereleases=True), (
                f"{lock} pins {name}=={locked[name][0]} outside {requirement.specifier}"
            )


@pytest.mark.parametrize("lock", ["requirements.txt", "requirements-dev.txt"])
def test_every_pin_carries_a_hash(lock: str) -> None:
    """pip's hash-checking mode needs a hash for every pinned package."""
    assert all(hashes for _, hashes in pins(lock).values())


def test_dev_lock_agrees_with_the_runtime_lock() -> None:
    """The image (runtime lock) and the tests (dev lock) run the same runtime versions."""
    runtime, dev = pins("requirements.txt"), pins("requirements-dev.txt")
    assert {name: dev[name][0] for name in runtime} == {n: v for n, (v, _) in runtime.items()}


@pytest.mark.parametrize(
    ("path", "lock"), [("Makefile", "requirements-dev.txt"), ("Dockerfile", "requirements.txt")]
)
def test_installs_come_from_the_lock(path: str, lock: str) -> None:
    """make and the image install the lock in hash-checking mode, and nothing unpinned."""
    text = (ROOT / path).read_text()
    assert lock in text
    assert "--require-hashes --no-deps -r" in text
    for line in text.splitlines():
        if "pip install" in line and "--require-hashes" not in line:
            assert "--no-deps" in line, f"{path}: an install that may resolve freely: {line}"
