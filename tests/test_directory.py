"""The static directory: parsing, look-ups and reloading when the file changes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from processor.errors import ConfigError
from processor.identity.directory import Directory, load_directory, parse_directory
from processor.identity.directory_watch import DirectoryWatcher


def test_lookups() -> None:
    """Exact addresses beat networks, longer prefixes beat shorter, principals are exact."""
    d = parse_directory(
        {
            "users": [
                {"id": "wide", "addresses": ["10.0.0.0/8"]},
                {"id": "narrow", "addresses": ["10.1.0.0/16"], "team": "lab"},
                {"id": "host", "addresses": ["10.1.2.3"], "principals": {"jwt.sub": ["s1"]}},
                {"email": "v6@example.com", "addresses": ["fd00::/64"]},
            ]
        }
    )
    found = [d.by_address(ip) for ip in ("10.1.2.3", "10.1.9.9", "10.9.9.9", "11.0.0.1")]
    assert [u.id if u else None for u in found] == ["host", "narrow", "wide", None]
    assert d.by_address("fd00::7") is not None
    assert d.by_principal("jwt.sub", "s1") is not None
    assert d.by_principal("jwt.sub", "s2") is None
    assert d.has_principals


@pytest.mark.parametrize(
    ("doc", "paths"),
    [
        ({"users": [{"name": "no id"}]}, ["users.0"]),
        ({"users": [{"id": "a", "addresses": ["nope"]}]}, ["users.0.addresses.0"]),
        (
            {
                "users": [
                    {"id": "a", "addresses": ["10.0.0.1"]},
                    {"id": "b", "addresses": ["10.0.0.1"]},
                ]
            },
            ["users.1.addresses.0"],
        ),
        (
            {
                "users": [
                    {"id": "a", "principals": {"jwt.sub": ["x"]}},
                    {"id": "b", "principals": {"jwt.sub": ["x"]}},
                ]
            },
            ["users.1.principals.jwt.sub"],
        ),
        ({"users": [{"id": "a", "colour": "red"}]}, ["users.0.colour"]),
        ({"people": []}, ["people"]),
    ],
)
def test_invalid_documents(doc: dict[str, Any], paths: list[str]) -> None:
    """Every problem is reported with its path."""
    with pytest.raises(ConfigError) as caught:
        parse_directory(doc)
    assert [p.path for p in caught.value.problems] == paths


def test_empty_directory() -> None:
    """An empty file is a valid, empty directory."""
    assert len(parse_directory(None)) == 0
    assert Directory.empty().by_address("10.0.0.1") is None


def write(path: Path, text: str, mtime_ns: int) -> None:
    """Write ``text`` and pin the modification time (so the test does not race the clock)."""
    path.write_text(text)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_watcher_reloads_on_change_and_keeps_old_on_error(tmp_path: Path) -> None:
    """A changed file is reloaded; a broken one is reported and the old directory kept."""
    file = tmp_path / "directory.yaml"
    write(file, "users: [{id: a, addresses: [10.0.0.1]}]\n", 1_000_000_000)
    current: list[Directory] = []
    watcher = DirectoryWatcher(str(file), 10.0, current.append)
    watcher.load()
    assert current[-1].by_address("10.0.0.1") is not None
    assert watcher.check() is False
    write(file, "users: [{id: b, addresses: [10.0.0.2]}]\n", 2_000_000_000)
    assert watcher.check() is True
    assert current[-1].by_address("10.0.0.2") is not None
    assert current[-1].by_address("10.0.0.1") is None
    write(file, "users: [{id: c, addresses: [bogus]}]\n", 3_000_000_000)
    assert watcher.check() is False
    assert current[-1].by_address("10.0.0.2") is not None
    assert watcher.reloads == 1


def test_load_errors(tmp_path: Path) -> None:
    """A missing or unparsable file is a ConfigError, not a crash."""
    with pytest.raises(ConfigError):
        load_directory(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("users: [\n")
    with pytest.raises(ConfigError):
        load_directory(bad)


def test_example_directory_loads() -> None:
    """The documented example directory is valid."""
    root = Path(__file__).resolve().parent.parent
    d = load_directory(root / "deploy/examples/directory.yaml")
    assert d.by_address("10.50.3.3") is not None
    assert d.by_principal("jwt.sub", "auth0|64f1c0ffee") is not None
