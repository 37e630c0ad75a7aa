"""tinygrad_conv: a small autograd framework whose convolution and pooling are Cython kernels.

    from tinygrad_conv import Tensor
    import tinygrad_conv.functional as F
"""

import os
import sys

# NOTE: macOS wheels carry their own copy of LLVM's libomp (delocate bundles it), and so does
# PyTorch's: the second copy to start aborts the process ("OMP: Error #15") unless duplicates are
# allowed. As scikit-learn does, allow them before any kernel starts OpenMP; a value the user
# set wins. Our kernels already keep BLAS to one thread inside their parallel loops.
if sys.platform == "darwin":
    os.environ.setdefault("KMP_DUPLICATE_LIB_OK", "True")

# first, as it decides how the engine loads: TINYGRAD_CONV_PURE_PYTHON=1 runs its .py files
import tinygrad_conv._pure_python  # noqa: F401
from tinygrad_conv import data, functional, lr_scheduler, nn, optim, viz
from tinygrad_conv._threads import get_num_threads, max_num_threads, set_num_threads
from tinygrad_conv._version import __version__ as __version__  # the installed metadata's
from tinygrad_conv.autograd import detect_anomaly, is_grad_enabled
from tinygrad_conv.checkpoint import load, save
from tinygrad_conv.config import show_config
from tinygrad_conv.exercises import student_kernels
from tinygrad_conv.gradcheck import GradcheckError, gradcheck
from tinygrad_conv.reference import reference_kernels
from tinygrad_conv.rng import manual_seed
from tinygrad_conv.scalar import Value
from tinygrad_conv.tensor import Function, Tensor, no_grad

# PyTorch's spelling, torch.optim.lr_scheduler: the schedules live in their own module (it
# needs optim's Optimizer); listed under optim, `from tinygrad_conv.optim.lr_scheduler import
# OneCycleLR` works too
optim.lr_scheduler = lr_scheduler
sys.modules["tinygrad_conv.optim.lr_scheduler"] = lr_scheduler

__all__ = [
    "Function", "GradcheckError", "Tensor", "Value", "data", "detect_anomaly", "functional",
    "get_num_threads", "gradcheck", "is_grad_enabled", "load", "manual_seed",
    "max_num_threads", "nn", "no_grad", "optim", "reference_kernels", "save", "set_num_threads",
    "show_config", "student_kernels", "viz",
]
