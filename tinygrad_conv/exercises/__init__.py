"""Build it yourself: exercises that grade a learner's backward passes and name the mistake.

    python -m tinygrad_conv.exercises new my_exercises       # conv.py, pool.py, value.py
    python -m tinygrad_conv.exercises grade my_exercises     # which levels pass, what is wrong

The skeletons are in `skeletons/`, the reference solutions in `solutions/` (never copied by
`new`). The grader reads top-down: `cases.py` (the levels and their cases), `checks.py` (what
is checked on one case), `mistakes.py` (models of the known mistakes), `report.py` (what is
printed), `grader.py` (the loop over tasks, functions and levels). `student.py` lets the
engine train with the learner's functions: `tinygrad_conv.student_kernels(DIR)`.
"""

from tinygrad_conv.exercises.student import student_kernels

__all__ = ["student_kernels"]
