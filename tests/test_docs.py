"""The documentation site (mkdocs.yml, docs/) builds with warnings as errors, and its nav and pages agree.

A strict build fails on a broken link or anchor between pages, a missing figure, and a docstring that
mkdocstrings cannot render for the API reference (docs/api/); the nav check fails on a page left out of the nav
and on a nav entry whose file does not exist.
"""

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def nav_files(entries) -> list[str]:
    """Every file a mkdocs `nav` names, however deeply its sections nest."""
    files = []
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        files += nav_files(value) if isinstance(value, list) else [value]
    return files


def test_site_builds_strict(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's end-of-life banner, not a build warning
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    for page in ["index.html", "training/index.html", "refinement/index.html", "api/training/index.html"]:
        assert (site / page).is_file(), page
    assert "rubric_rft.training.monitor.callback.OverOptimizationMonitor" in (
        site / "api/training/index.html"
    ).read_text(), "the API reference was not generated from the docstrings"


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    in_nav = nav_files(config["nav"])
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert len(in_nav) == len(set(in_nav)), "a page is listed twice in the nav"
    assert sorted(set(pages) - set(in_nav)) == [], "pages missing from the nav of mkdocs.yml"
    assert sorted(set(in_nav) - set(pages)) == [], "nav entries without a file under docs/"
