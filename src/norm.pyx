# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""Batch normalization, forward and backward, per channel over a (N, C, M) array.

For one channel c, with its n = N*M values x_i (every image, every position), γ = weight[c],
β = bias[c]:

    μ = Σx_i / n,   σ² = Σ(x_i - μ)² / n   (biased; or the running estimates in eval mode)
    x̂_i = (x_i - μ) / σ,   σ = sqrt(σ² + eps)
    y_i = γ x̂_i + β                                                  batch_norm_forward

and, given dy = dL/dy,

    dL/dγ = Σ dy_i x̂_i,   dL/dβ = Σ dy_i
    dL/dx_i = (1/n)(γ/σ)(n dy_i - Σdy - x̂_i Σ(dy x̂))   (training: μ, σ depend on x)
    dL/dx_i = (γ/σ) dy_i                               (eval: μ, σ are constants)
                                                                     batch_norm_backward

The training formula is the chain rule through μ and σ: x̂ depends on every x_j of its channel,
so each dx_i gets dy_i's direct share minus the part of the gradient that moves the mean
(Σdy / n) and the part that moves the spread (x̂_i Σ(dy x̂) / n).

Work is split over channels, which never share memory; sums are accumulated in double, in a
fixed order, so the result does not depend on the number of threads.

Precision when |μ| >> σ (float32 activations of 1000 ± 0.01, say): μ, σ² and 1/σ are computed
and kept in double (μ and σ² by two passes: Σx²/n - μ² would cancel), and every value is
centred before it is scaled, y = (x - μ)·(γ/σ) + β. The one-multiply-add form
x·(γ/σ) + (β - μγ/σ) rounds the large product x·γ/σ and loses the small difference (PyTorch's
CPU kernel does that: errors of 1e-3 and more there), and a μ rounded to float32 (off by up to
half an ulp of μ, which may be many σ) would shift every x̂ alike. So the centring uses μ split
into two numbers of x's dtype (`split`): it stays one vector lane per value and as fast as the
one-multiply-add form, yet each x̂ is as precise as float32 holds it. The backward recomputes
x̂ the same way from the forward's double μ and 1/σ.
"""

import numpy as np

from cython.parallel cimport prange
from libc.math cimport sqrt

from kernels cimport floating, sum_of

from tinygrad_conv._threads import get_num_threads


cdef void channel_stats(const floating *x,        # IN  channel c of image 0 (stride C*M)
                        Py_ssize_t N, Py_ssize_t M, Py_ssize_t image,
                        double *mean, double *var) noexcept nogil:
    """μ = Σx / n and the biased σ² = Σ(x - μ)² / n over the n = N*M values of one channel.

    Two passes (the mean first): Σx² - nμ² would cancel catastrophically when |μ| >> σ.
    """
    cdef Py_ssize_t n
    cdef double total = 0, spread = 0
    for n in range(N):
        total += sum_of(x + n * image, M)
    mean[0] = total / (N * M)
    for n in range(N):
        spread += squared_deviations(x + n * image, M, mean[0])
    var[0] = spread / (N * M)


cdef inline double squared_deviations(const floating *v, Py_ssize_t n,
                                      double mean) noexcept nogil:
    """Σ (v[i] - mean)² in double, in four interleaved partial sums (as sum_of does: a fixed
    order, and four chains of additions the CPU runs side by side instead of one)."""
    cdef double part[4]
    cdef double d
    cdef Py_ssize_t i, k
    for k in range(4):
        part[k] = 0
    for i in range(0, n - n % 4, 4):
        for k in range(4):
            d = v[i + k] - mean
            part[k] += d * d
    for i in range(n - n % 4, n):
        d = v[i] - mean
        part[0] += d * d
    return (part[0] + part[1]) + (part[2] + part[3])


cdef inline void split(double mean, floating *hi, floating *lo) noexcept nogil:
    """μ (double) as μ_hi + μ_lo in x's dtype: μ_hi = μ rounded, μ_lo = the rest. For every x
    near μ (all of them when |μ| >> σ), x - μ_hi is exact, so (x - μ_hi) - μ_lo is x - μ to
    x's precision: centring stays in x's dtype (as fast as one subtraction) yet loses nothing
    to μ's rounding."""
    hi[0] = <floating> mean
    lo[0] = <floating> (mean - hi[0])


cdef void normalize_channel(const floating *x,   # IN  channel c of image 0
                            floating *y,         # OUT the same positions of y
                            Py_ssize_t N, Py_ssize_t M, Py_ssize_t image,
                            double mean, double invstd, double gamma,
                            double beta) noexcept nogil:
    """y = γ (x - μ) / σ + β, with x centred before it is scaled (see the module docstring)."""
    cdef Py_ssize_t n, m
    cdef floating mean_hi, mean_lo
    split(mean, &mean_hi, &mean_lo)
    cdef floating scale = <floating> (gamma * invstd), shift = <floating> beta
    for n in range(N):
        for m in range(M):
            y[n * image + m] = ((x[n * image + m] - mean_hi) - mean_lo) * scale + shift


def batch_norm_forward(const floating[:, :, ::1] x,   # IN  (N, C, M)
                       weight, bias,                   # IN  γ, β: (C,) arrays or None (1, 0)
                       running_mean, running_var,      # IN  (C,) arrays, or None: batch stats
                       double eps):
    """(y, mean, var, invstd): y (N, C, M) in x's dtype and, per channel, the μ and biased σ²
    it used and 1/sqrt(σ² + eps), in double (C,). With running_mean/var given (eval mode)
    those are μ, σ².

    The caller (norm_ops) checks shapes and dtypes. With no values (N*M == 0) y is empty, and
    batch statistics are NaN (the mean of nothing).
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], M = x.shape[2], c
    cdef Py_ssize_t image = C * M
    dtype = np.float32 if floating is float else np.float64
    out = np.empty((N, C, M), dtype=dtype)
    mean_arr = np.empty(C, dtype=np.float64)
    var_arr = np.empty(C, dtype=np.float64)
    gamma_arr = np.ones(C, dtype=dtype) if weight is None else weight
    beta_arr = np.zeros(C, dtype=dtype) if bias is None else bias
    cdef bint batch_stats = running_mean is None
    invstd_arr = np.empty(C, dtype=np.float64)
    if not batch_stats:
        mean_arr[:] = running_mean
        var_arr[:] = running_var
        invstd_arr[:] = 1 / np.sqrt(var_arr + eps)
    if N * M == 0:   # an empty batch: nothing to normalize, nothing to take statistics of
        if batch_stats:
            mean_arr[:] = var_arr[:] = invstd_arr[:] = np.nan
        return out, mean_arr, var_arr, invstd_arr
    cdef floating[:, :, ::1] y = out
    cdef double[::1] mu = mean_arr, var = var_arr, invstd = invstd_arr  # a slot per channel,
    cdef const floating[::1] gamma = gamma_arr, beta = beta_arr         # written by its thread
    cdef int threads = get_num_threads()
    for c in prange(C, nogil=True, schedule="static", num_threads=threads):
        if batch_stats:
            channel_stats(&x[0, c, 0], N, M, image, &mu[c], &var[c])
            invstd[c] = 1 / sqrt(var[c] + eps)
        normalize_channel(&x[0, c, 0], &y[0, c, 0], N, M, image, mu[c], invstd[c], gamma[c],
                          beta[c])
    return out, mean_arr, var_arr, invstd_arr


cdef void channel_grad_sums(const floating *dy, const floating *x,   # IN  channel c
                            Py_ssize_t N, Py_ssize_t M, Py_ssize_t image,
                            double mean, double invstd,
                            double *sum_dy, double *sum_dy_xhat) noexcept nogil:
    """Σdy and Σ(dy x̂) over one channel, x̂ = (x - μ)/σ recomputed from x (as the forward)."""
    cdef Py_ssize_t n
    cdef double s = 0, sx = 0
    cdef floating mean_hi, mean_lo
    split(mean, &mean_hi, &mean_lo)
    for n in range(N):
        row_grad_sums(dy + n * image, x + n * image, M, mean_hi, mean_lo, &s, &sx)
    sum_dy[0] = s
    sum_dy_xhat[0] = sx * invstd    # Σ(dy x̂) = Σ(dy (x - μ)) / σ


cdef inline void row_grad_sums(const floating *dy, const floating *x, Py_ssize_t n,
                               floating mean_hi, floating mean_lo,
                               double *sum_dy, double *sum_dy_centred) noexcept nogil:
    """Adds Σdy and Σ(dy (x - μ)) over one row of n values, each in four interleaved partial
    sums (four chains of additions the CPU runs side by side, in a fixed order)."""
    cdef double s[4]
    cdef double sx[4]
    cdef Py_ssize_t i, k
    for k in range(4):
        s[k] = 0
        sx[k] = 0
    for i in range(0, n - n % 4, 4):
        for k in range(4):
            s[k] += dy[i + k]
            sx[k] += dy[i + k] * ((x[i + k] - mean_hi) - mean_lo)
    for i in range(n - n % 4, n):
        s[0] += dy[i]
        sx[0] += dy[i] * ((x[i] - mean_hi) - mean_lo)
    sum_dy[0] += (s[0] + s[1]) + (s[2] + s[3])
    sum_dy_centred[0] += (sx[0] + sx[1]) + (sx[2] + sx[3])


cdef void input_grad_channel(const floating *dy, const floating *x,   # IN  channel c
                             floating *dx,                            # OUT channel c of dL/dx
                             Py_ssize_t N, Py_ssize_t M, Py_ssize_t image,
                             double mean, double invstd, double gamma,
                             double sum_dy, double sum_dy_xhat) noexcept nogil:
    """dx = (1/n)(γ/σ)(n dy - Σdy - x̂ Σ(dy x̂)), n = N*M, x̂ centred as the forward's
    (x̂ Σ(dy x̂) computed as (x - μ) · Σ(dy x̂)/σ: one multiply a value fewer)."""
    cdef Py_ssize_t n, m, at
    cdef floating mean_hi, mean_lo
    split(mean, &mean_hi, &mean_lo)
    cdef floating count = N * M
    cdef floating k = <floating> (gamma * invstd / (N * M))
    cdef floating s = <floating> sum_dy, sx = <floating> (sum_dy_xhat * invstd)
    for n in range(N):
        for m in range(M):
            at = n * image + m
            dx[at] = k * (count * dy[at] - s - ((x[at] - mean_hi) - mean_lo) * sx)


def batch_norm_backward(const floating[:, :, ::1] grad_out,   # IN  dy: (N, C, M)
                        const floating[:, :, ::1] x,          # IN  the forward's input
                        const double[::1] mean,               # IN  μ per channel
                        const double[::1] invstd,             # IN  1/σ per channel
                        weight,                               # IN  γ (C,) or None (1)
                        bint training, bint need_dx):
    """(dx or None, dL/dγ, dL/dβ): dx (N, C, M) by the training formula (μ, σ from this batch)
    or, in eval mode, (γ/σ) dy; dL/dγ = Σ dy x̂ and dL/dβ = Σ dy per channel (C,); all in x's
    dtype. mean and invstd are the forward's (double)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], M = x.shape[2], c, n, m
    cdef Py_ssize_t image = C * M
    dtype = np.float32 if floating is float else np.float64
    gamma_arr = np.ones(C, dtype=dtype) if weight is None else weight
    cdef const floating[::1] gamma = gamma_arr
    dgamma_arr = np.empty(C, dtype=np.float64)
    dbeta_arr = np.empty(C, dtype=np.float64)
    dx_arr = np.empty((N, C, M), dtype=dtype) if need_dx else None
    cdef double[::1] dgamma = dgamma_arr, dbeta = dbeta_arr
    cdef floating[:, :, ::1] dx
    if need_dx:
        dx = dx_arr
    if N * M == 0:
        dgamma_arr[:] = 0
        dbeta_arr[:] = 0
        return dx_arr, dgamma_arr.astype(dtype), dbeta_arr.astype(dtype)
    cdef floating scale
    cdef int threads = get_num_threads()
    for c in prange(C, nogil=True, schedule="static", num_threads=threads):
        channel_grad_sums(&grad_out[0, c, 0], &x[0, c, 0], N, M, image, mean[c], invstd[c],
                          &dbeta[c], &dgamma[c])
        if need_dx and training:
            input_grad_channel(&grad_out[0, c, 0], &x[0, c, 0], &dx[0, c, 0], N, M, image,
                               mean[c], invstd[c], gamma[c], dbeta[c], dgamma[c])
        elif need_dx:
            # eval: μ and σ are constants, so dx = (γ/σ) dy
            scale = <floating> (gamma[c] * invstd[c])
            for n in range(N):
                for m in range(M):
                    dx[n, c, m] = scale * grad_out[n, c, m]
    return dx_arr, dgamma_arr.astype(dtype), dbeta_arr.astype(dtype)
