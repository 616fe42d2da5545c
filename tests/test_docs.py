"""The documentation says what the code does: the options reference is generated from the schema
and up to date, and every option is described in `scons -h`."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

from highboot.options.schema import OPTIONS, reference


def test_the_options_reference_is_up_to_date() -> None:
    assert (ROOT / "docs" / "options.md").read_text() == reference(), \
        "docs/options.md is out of date: run .venv/bin/python tools/options-reference"


def test_scons_help_lists_every_option_with_its_default() -> None:
    out = subprocess.run([sys.executable, "-m", "SCons", "-Q", "-h"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    for option in OPTIONS:
        assert f"\n{option.name}: {option.help.split(' (')[0]}" in out, option.name


def test_the_documentation_points_only_inside_the_repository() -> None:
    """README.md is the front door; docs/ has the rest. Every link between them resolves to a file of
    the repository (a clone has nothing beside it)."""
    import re

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert len(pages) >= 9
    for page in pages:
        text = page.read_text()
        assert "shared/" not in text, f"{page.name} points outside the repository"
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
            if "://" in target:
                continue
            assert (page.parent / target).resolve().is_relative_to(ROOT), f"{page.name}: {target}"
            assert (page.parent / target).exists(), f"{page.name}: a link to {target}, which is not there"
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200
