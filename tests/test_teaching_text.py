"""The teaching text states the formulas the code computes and install commands that work.

- dL/dA pads Z' by the dilated kernel's extent minus one, d(k-1) (k_eff - 1): no page, docstring
  or comment writes the general formula with k-1 (reference.py and the kernels pad by d(k-1)).
- `pip install ".[extra]"` after `pip install -e` replaces the editable install with a copy:
  outside the fresh-clone command (which installs no editable copy), extras go with -e.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md")),
         *sorted((ROOT / "tinygrad_conv").glob("*.py")), *sorted((ROOT / "examples").glob("*.py")),
         *sorted((ROOT / "src").glob("*.pyx"))]


def test_the_general_dl_da_formula_pads_by_d_times_k_minus_1():
    wrong = re.compile(r"pad\(dilate\(Z', ?s\), ?k ?- ?1\)")
    found = [f"{path.relative_to(ROOT)}:{n}" for path in TEXTS if path.exists()
             for n, line in enumerate(path.read_text().splitlines(), 1) if wrong.search(line)]
    assert not found, f"pad(dilate(Z', s), k-1) should be d(k-1) (k_eff - 1) at {found}"
    for page in ("README.md", "docs/walkthrough.md"):
        assert "pad(dilate(Z', s), d(k-1))" in (ROOT / page).read_text(), page


def test_extras_are_installed_editable_outside_the_fresh_clone_command():
    plain = re.compile(r'pip install "\.\[(\w+)\]"')
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]:
        lines = page.read_text().splitlines()
        for n, line in enumerate(lines):
            if plain.search(line):
                fresh_clone = n >= 2 and lines[n - 2] == "<!-- ci: mnist command -->"
                assert fresh_clone, (f"{page.name}:{n + 1}: {line.strip()!r} would replace an "
                                     f"editable install: write pip install -e \".[...]\"")
