"""What an index page and a downloaded distribution show: links, license, the sdist's contents."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from support import ROOT

DOCS_URL = "https://wsgi-sse.readthedocs.io/en/latest/"

# What the test suite reads besides the package: it must run from an unpacked sdist.
TEST_TREES = ["tests", "examples", "docs", "benchmarks", "deploy", "scripts"]
TEST_FILES = ["pyproject.toml", "mkdocs.yml", "README.md", "CHANGELOG.md", "LICENSE"]
SKIPPED_PARTS = {"__pycache__", "node_modules", "results", ".pytest_cache"}


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist and the wheel, built from this tree by hatchling."""
    out = tmp_path_factory.mktemp("dist")
    for target in ("sdist", "wheel"):
        subprocess.run(
            [sys.executable, "-m", "hatchling", "build", "-t", target, "-d", str(out)],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    return {"sdist": next(out.glob("*.tar.gz")), "wheel": next(out.glob("*.whl"))}


def _wanted_in_sdist() -> set[str]:
    wanted = set(TEST_FILES)
    for tree in TEST_TREES:
        for path in (ROOT / tree).rglob("*"):
            relative = path.relative_to(ROOT)
            if path.is_file() and not SKIPPED_PARTS.intersection(relative.parts):
                if path.suffix != ".pyc":
                    wanted.add(relative.as_posix())
    return wanted


def test_sdist_ships_what_the_tests_read(dists: dict[str, Path]) -> None:
    """The sdist holds the tests, every file they import or read, and mkdocs.yml with docs/."""
    with tarfile.open(dists["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    missing = sorted(_wanted_in_sdist() - names)
    assert not missing, f"not in the sdist: {missing}"
    assert "twisted/plugins/wsgi_sse_plugin.py" in names
    assert "twisted/plugins/__init__.py" not in names


def test_wheel_license_and_urls(dists: dict[str, Path]) -> None:
    """The wheel carries the MIT license text and the repository URL, and no test code."""
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        names = wheel.namelist()
        metadata = wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        license_text = wheel.read(next(n for n in names if n.endswith("licenses/LICENSE"))).decode()
    assert "MIT License" in license_text
    assert "License-Expression: MIT" in metadata
    assert re.search(r"^Project-URL: Repository, https://\S+$", metadata, re.M)
    assert re.search(r"^Project-URL: Source, https://\S+$", metadata, re.M)
    unwanted = ("tests/", "twisted/__init__", "twisted/plugins/__init__")
    assert not [n for n in names if n.startswith(unwanted)]
    assert "twisted/plugins/wsgi_sse_plugin.py" in names


def test_readme_links_are_absolute() -> None:
    """README links work on an index page: absolute, and the docs ones name an existing page."""
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", readme) + re.findall(r"<(https?://[^>]+)>", readme)
    assert targets
    relative = [t for t in targets if not re.match(r"https?://", t)]
    assert not relative, f"relative links in README.md: {relative}"
    for target in targets:
        if target.startswith(DOCS_URL):
            page = target[len(DOCS_URL) :].strip("/") or "index"
            assert (ROOT / "docs" / f"{page}.md").exists(), f"no docs page for {target}"
