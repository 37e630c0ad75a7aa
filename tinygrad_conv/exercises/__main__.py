"""python -m tinygrad_conv.exercises new DIR [--force] | grade DIR [--task T] [--function F]...
[--level N] [--seed S]: exit status 0 when every graded case passes, 1 otherwise."""

from __future__ import annotations

import argparse
import sys

from tinygrad_conv.exercises.cases import FUNCTIONS, TASKS
from tinygrad_conv.exercises.grader import grade, new


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tinygrad_conv.exercises",
                                description="Write the backward passes yourself; the grader "
                                "checks them and names the mistake.")
    sub = p.add_subparsers(dest="command", required=True)
    p_new = sub.add_parser("new", help="copy the exercise files (conv.py, pool.py, value.py)")
    p_new.add_argument("directory")
    p_new.add_argument("--force", action="store_true", help="overwrite existing files")
    p_grade = sub.add_parser("grade", help="grade the exercise files in a directory")
    p_grade.add_argument("directory")
    p_grade.add_argument("--task", choices=TASKS, action="append",
                         help="grade this task only (repeatable; default: all)")
    p_grade.add_argument("--function", action="append", default=[],
                         choices=[f for names in FUNCTIONS.values() for f in names],
                         metavar="NAME", help="grade this function only (repeatable)")
    p_grade.add_argument("--level", type=int, help="grade levels 1 to N only")
    p_grade.add_argument("--seed", type=int, help="the hidden cases' seed (default: random)")
    args = p.parse_args(argv)
    if args.command == "new":
        return new(args.directory, args.force)
    if args.level is not None and args.level < 1:
        p.error(f"--level must be 1 or more, got {args.level}")
    tasks = args.task or [t for t in TASKS
                          if not args.function or set(args.function) & set(FUNCTIONS[t])]
    return 0 if grade(args.directory, tasks, args.function, args.level, args.seed) else 1


if __name__ == "__main__":
    sys.exit(main())
