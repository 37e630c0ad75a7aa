"""Every ```python block of every page under docs/ runs, and prints exactly what the page shows.

A page's blocks run in order in one namespace (a fresh one per page), so later blocks use what
earlier ones defined. The ```text block right after a ```python block (only blank lines between)
is that block's output, compared character for character; a python block with no text block
after it must print nothing. So a student who runs the snippets gets the numbers on the page.

After changing a page on purpose: `python tests/test_docs.py --update docs/walkthrough.md`
rewrites its text blocks with what the code prints now (then read the diff before committing).

A ```pdb block is a debugger session on the python block before it (saved as a script): its
`(Pdb) ` lines are typed into `python -m pdb`, and its other lines (but the first, `$ ...`)
must come out, in order; pdb's `> file(line)function()` lines are not shown on the page.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from helpers import run_python

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(DOCS.glob("**/*.md"))
FENCE = re.compile(r"^```(\w*)[ \t]*$")


@dataclass
class Block:
    lang: str
    text: str
    first: int  # the line number (1-based) of the block's first content line
    last: int   # the line number of its closing fence
    output: Block | None = None  # for a python block: the text block that follows it


def blocks(page: Path) -> list[Block]:
    """The page's fenced blocks, each python block linked to the text block right after it."""
    lines = page.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start = i + 1
        end = start
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        if end == len(lines):
            raise ValueError(f"{page.name}:{i + 1}: a ``` block is never closed")
        found.append(Block(m.group(1), "\n".join(lines[start:end]), start + 1, end + 1))
        i = end + 1
    for prev, nxt in zip(found, found[1:]):
        between = lines[prev.last:nxt.first - 2]   # the lines between the two fences
        if prev.lang == "python" and nxt.lang == "text" and not any(s.strip() for s in between):
            prev.output = nxt
    return found


def run_page(page: Path) -> list[tuple[Block, str]]:
    """Run the page's python blocks in one namespace; (block, what it printed) for each."""
    namespace: dict = {"__name__": f"docs.{page.stem}"}
    printed = []
    with np.printoptions():  # a page may set print options; they end with the page
        for block in blocks(page):
            if block.lang != "python":
                continue
            out = io.StringIO()
            code = compile(block.text, f"{page}:{block.first}", "exec")
            with contextlib.redirect_stdout(out):
                exec(code, namespace)
            printed.append((block, out.getvalue()))
    return printed


def test_docs_has_pages():
    assert any(p.name == "walkthrough.md" for p in PAGES), f"no walkthrough.md in {DOCS}"
    assert any(p.name == "scalar.md" for p in PAGES), f"no scalar.md in {DOCS}"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_text_block_is_the_output_of_the_python_block_before_it(page):
    all_blocks = blocks(page)
    assert any(b.lang == "python" for b in all_blocks), f"{page.name} has no python block"
    outputs = {id(b.output) for b in all_blocks if b.output is not None}
    stray = [b.first for b in all_blocks if b.lang == "text" and id(b) not in outputs]
    assert not stray, f"{page.name}: text blocks at lines {stray} follow no python block"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_snippet_prints_exactly_what_the_page_shows(page):
    for block, printed in run_page(page):
        shown = block.output.text if block.output is not None else ""
        got = printed.rstrip("\n")
        if got != shown:
            diff = "\n".join(difflib.unified_diff(
                shown.splitlines(), got.splitlines(), "page shows", "code prints", lineterm=""))
            pytest.fail(f"{page.name}: the block at line {block.first} prints something else "
                        f"than the page shows:\n{diff}")


def pdb_sessions(page: Path) -> list[tuple[Block, Block]]:
    """(script, session): each pdb block with the python block before it."""
    found, script = [], None
    for block in blocks(page):
        if block.lang == "python":
            script = block
        elif block.lang == "pdb":
            assert script is not None, f"{page.name}:{block.first}: a pdb block before any code"
            found.append((script, block))
    return found


SESSIONS = [(page, i) for page in PAGES for i in range(len(pdb_sessions(page)))]


@pytest.mark.parametrize("page, index", SESSIONS,
                         ids=[f"{page.name}-{i}" for page, i in SESSIONS])
def test_every_debugger_session_shows_what_pdb_prints(page, index, tmp_path):
    script, session = pdb_sessions(page)[index]
    lines = session.text.splitlines()[1:]                     # after `$ python -m pdb ...`
    commands = [line[len("(Pdb) "):] for line in lines if line.startswith("(Pdb) ")]
    shown = [line.rstrip() for line in lines if not line.startswith("(Pdb) ")]
    path = tmp_path / "step.py"
    path.write_text(script.text + "\n")
    done = run_python(["-m", "pdb", path], cwd=tmp_path, input="\n".join(commands) + "\n",
                      timeout=120)
    # the prompt has no newline after it: each prompt starts a line of output
    printed = [line.rstrip() for line in done.stdout.replace("(Pdb) ", "\n").splitlines()
               if not line.startswith("> ")]
    at = 0
    for line in shown:
        while at < len(printed) and printed[at] != line:
            at += 1
        assert at < len(printed), (f"{page.name}:{session.first}: pdb did not print {line!r} "
                                   f"(in this order); it printed:\n{done.stdout}")
        at += 1


def update(page: Path) -> None:
    """Rewrite the text block after each python block with what the block prints now."""
    lines = page.read_text().splitlines()
    for block, printed in reversed(run_page(page)):  # from the end: line numbers stay valid
        got = printed.rstrip("\n").splitlines()
        if block.output is not None:
            lines[block.output.first - 1:block.output.last - 1] = got
        elif got:
            lines[block.last:block.last] = ["", "```text", *got, "```"]
    page.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "--update":
        sys.exit("usage: python tests/test_docs.py --update PAGE.md [PAGE.md ...]")
    for name in sys.argv[2:]:
        update(Path(name))
