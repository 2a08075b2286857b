"""The README is a short, linked front page; docs/ holds the rest; LICENSE is Apache-2.0."""

from __future__ import annotations

import re
import tomllib
from collections import Counter
from pathlib import Path

import pytest
from pydantic import BaseModel

from processor.app.config import Config

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CONFIG_REFERENCE = DOCS / "configuration.md"
LICENSE = ROOT / "LICENSE"
MAX_README_LINES = 220
TOC_HEADING = "Contents"

FENCE = re.compile(r"^```.*?^```[ \t]*$", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*$", re.MULTILINE)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
# A cited repository file: a relative path with a directory and a known extension, or a
# top-level Markdown, lock or TOML file named on its own.
CITED_PATH = re.compile(r"(?:[\w.-]+/)+[\w.-]+\.(?:py|md|yaml|yml|json|proto|toml|lock)")
CITED_TOP_LEVEL = re.compile(r"[\w.-]+\.(?:md|toml|lock)")


def markdown_files() -> list[Path]:
    """README.md and every Markdown file in docs/."""
    return [README, *sorted(DOCS.glob("*.md"))]


def prose(path: Path) -> str:
    """The file's text without its fenced code blocks."""
    return FENCE.sub("", path.read_text(encoding="utf-8"))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    text = LINK.sub(lambda match: match.group(0)[1 : match.group(0).index("]")], heading)
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, with GitHub's -1, -2 suffixes for repeats."""
    seen: Counter[str] = Counter()
    result = set()
    for _, title in HEADING.findall(prose(path)):
        base = slug(title)
        result.add(f"{base}-{seen[base]}" if seen[base] else base)
        seen[base] += 1
    return result


def toc_links(text: str) -> list[str]:
    """The link targets listed under the README's table-of-contents heading."""
    match = re.search(rf"^## {TOC_HEADING}[ \t]*\n(.*?)(?=^#)", text, re.MULTILINE | re.DOTALL)
    assert match, f"README.md has no '## {TOC_HEADING}' section"
    return LINK.findall(match.group(1))


def config_keys(prefix: str, model: type[BaseModel]) -> list[str]:
    """Dotted keys of a config section, nested sections included."""
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend(config_keys(f"{prefix}.{name}", annotation))
        else:
            keys.append(f"{prefix}.{name}")
    return keys


def section_model(name: str) -> type[BaseModel]:
    """The model class of one top-level config section."""
    annotation = Config.model_fields[name].annotation
    assert isinstance(annotation, type) and issubclass(annotation, BaseModel)
    return annotation


def test_readme_is_short() -> None:
    """The README stays a front page: at most MAX_README_LINES lines."""
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines"


def test_readme_table_of_contents_points_at_its_headings() -> None:
    """Every table-of-contents link names a README heading, and every section is listed."""
    text = prose(README)
    links = toc_links(text)
    assert len(links) >= 5, links
    existing = anchors(README)
    for link in links:
        assert link.startswith("#"), f"table of contents entry {link} is not an anchor"
        assert link[1:] in existing, f"no heading for {link}"
    sections = [slug(title) for level, title in HEADING.findall(text) if level == "##"]
    listed = {link[1:] for link in links}
    missing = [s for s in sections if s != slug(TOC_HEADING) and s not in listed]
    assert not missing, f"sections missing from the table of contents: {missing}"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_point_at_existing_files(path: Path) -> None:
    """Each relative link (its #anchor stripped) resolves to a file or folder in the repo."""
    broken = []
    for target in LINK.findall(prose(path)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL, or an anchor in the same file
        resolved = (path.parent / target.partition("#")[0]).resolve()
        if not resolved.exists() or not resolved.is_relative_to(ROOT):
            broken.append(target)
    assert not broken, f"{path.name}: links to missing files: {broken}"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_cited_repository_files_exist(path: Path) -> None:
    """A file path quoted in backticks (`processor/x.py`, `DOMAIN.md`) names a real file."""
    cited = [
        code
        for code in INLINE_CODE.findall(prose(path))
        if CITED_PATH.fullmatch(code) or CITED_TOP_LEVEL.fullmatch(code)
    ]
    missing = [code for code in cited if not (ROOT / code).exists() and not (DOCS / code).exists()]
    assert not missing, f"{path.name} cites files that do not exist: {missing}"


@pytest.mark.parametrize("section", ["usage", "telemetry"])
def test_configuration_reference_lists_every_key(section: str) -> None:
    """Each key of the section, nested ones included, appears in docs/configuration.md."""
    reference = CONFIG_REFERENCE.read_text(encoding="utf-8")
    keys = config_keys(section, section_model(section))
    assert keys
    missing = [key for key in keys if f"`{key}`" not in reference]
    assert not missing, f"docs/configuration.md does not document {missing}"


def test_readme_lists_every_dependency() -> None:
    """Every runtime and dev dependency in pyproject.toml is named in the README's table."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    names = [re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0] for req in requirements]
    text = README.read_text(encoding="utf-8").lower()
    missing = [name for name in names if f"`{name.lower()}`" not in text]
    assert not missing, f"README.md's dependency table does not name {missing}"


def test_license_is_apache_2() -> None:
    """LICENSE holds the Apache License 2.0 text that pyproject.toml declares."""
    text = LICENSE.read_text(encoding="utf-8")
    assert text.lstrip().startswith("Apache License")
    assert "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert "APPENDIX: How to apply the Apache License to your work." in text
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "Apache-2.0"
