"""Every relative link in the docs and the README leads to a file of the checkout."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import tinygrad_conv

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


PACKAGE = Path(tinygrad_conv.__file__).resolve().parent


def leads_to_a_file(page: Path, target: str) -> bool:
    """Whether a relative link resolves; a link into the package also resolves against the
    installed package (a wheel's test run has the docs but no package source beside them)."""
    if (page.parent / target).exists():
        return True
    try:
        inside = (page.parent / target).resolve().relative_to(ROOT.resolve()).parts
    except ValueError:   # outside the checkout
        return False
    return inside[:1] == ("tinygrad_conv",) and PACKAGE.joinpath(*inside[1:]).exists()


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_relative_link_leads_to_a_file(page):
    missing = [target for target in LINK.findall(page.read_text())
               if "://" not in target and not leads_to_a_file(page, target)]
    assert not missing, f"{page.name} links to missing files: {missing}"
