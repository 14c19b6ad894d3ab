r"""Linear degradation operators for inverse problems :math:`y = A x + n`, :math:`n \sim N(0, \sigma_y^2 I)`.

An operator maps one batch ``x: [B, *D]`` to ``A x: [B, *M]`` (each example on its own; ``D`` =
``in_shape``, ``M`` = ``out_shape``) and carries the facts the methods need:

* :meth:`~LinearOperator.forward` :math:`A x` and :meth:`~LinearOperator.adjoint` :math:`A^\top y`
  (:math:`\langle A x, y\rangle = \langle x, A^\top y\rangle`, checked in the tests);
* :meth:`~LinearOperator.aat_diag`: the diagonal of :math:`AA^\top` (shape ``M``) when
  :math:`AA^\top` is diagonal (masks, channel and block averages), else ``None``;
* :meth:`~LinearOperator.adjoint_solve`: :math:`A^\top(\sigma^2 I + r^2 AA^\top)^{-1} v`, ΠGDM's
  likelihood direction: elementwise when :math:`AA^\top` is diagonal, in the SVD basis for
  :class:`SVDOperator`, else by conjugate gradients (lineax);
* :meth:`~LinearOperator.matrix`: the dense :math:`[m, d]` matrix (for tests and exact posteriors).

:class:`SVDOperator` (DDRM's view, Kawar et al. 2022) adds :math:`A = U\Sigma V^\top` applied
implicitly: :meth:`~SVDOperator.singulars` :math:`s \in \mathbb R^d_{\ge 0}` (zero where A sees
nothing), :meth:`~SVDOperator.vt` :math:`x \mapsto V^\top x \in \mathbb R^d`, :meth:`~SVDOperator.v`
its inverse, :meth:`~SVDOperator.ut` :math:`y \mapsto (U^\top y)_{1..d}` (coordinate i pairs with
:math:`s_i`; when m > d the rest of :math:`U^\top y` is orthogonal to the range of A and dropped,
when m < d it is padded with zeros) and :meth:`~SVDOperator.u`, so that

.. math:: A x = U(s \odot V^\top x),\quad A^\top y = V(s \odot U^\top y),\quad
          A^+ y = V\big(s^+ \odot U^\top y\big),\ s^+_i = 1/s_i \ (s_i > 0),\ 0\ \text{else}.

Concrete operators (all final; shapes are one example's):

=========================  ==========================================================  ==============
:class:`Inpainting`        :math:`A x = m \odot x` (``D -> D``), :func:`random_mask`,    V = U = I, s = m
                           :func:`box_mask`
:class:`Colorization`      channel mean ``[H, W, C] -> [H, W, 1]``                       per pixel
:class:`SuperResolution`   average pooling by ``factor`` ``[H, W, C] -> [H/f, W/f, C]``  per block
:class:`Blur`              circular convolution with an even kernel, via the FFT        Hartley basis
                           (:func:`gaussian_blur`, :func:`uniform_blur`)
:class:`DenseOperator`     any matrix ``[m, d]`` on flattened examples, SVD at build    dense SVD
:class:`FunctionOperator`  any linear function (adjoint by ``jax.linear_transpose``)    (none: CG)
=========================  ==========================================================  ==============

Channel and block averaging are one structure (:class:`_GroupMean`): each output is the mean of
a group of g inputs, :math:`A_{group} = \tfrac1g \mathbf 1^\top` with singular value
:math:`1/\sqrt g`, right singular vector :math:`\mathbf 1/\sqrt g` and the rest of an orthonormal
basis of :math:`\mathbb R^g` (the "decoupling" matrix of score_sde's colorization) for the null space.

The Blur's SVD: for a kernel even under circular reflection (:math:`k_{-i,-j} = k_{i,j}`, true of
the centred Gaussian and box kernels built here) the 2-D DFT :math:`\hat k` is real, and circular
convolution is diagonal in the real orthonormal discrete Hartley basis
:math:`H x = (\mathrm{Re}\,F x - \mathrm{Im}\,F x)/\sqrt{HW}` (:math:`H = H^\top = H^{-1}`) with
eigenvalues :math:`\hat k`; so :math:`V^\top = H`, :math:`s = |\hat k|`, :math:`U^\top = \mathrm{sign}(\hat k) H`.
"""

from __future__ import annotations

import abc
import math
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxscore._checks import check_broadcasts_to, is_concrete

LinearOp = Callable[[jax.Array], jax.Array]

__all__ = [
    "Blur", "Colorization", "DenseOperator", "FunctionOperator", "Inpainting", "LinearOperator", "SVDOperator",
    "SuperResolution", "box_mask", "gaussian_blur", "grayscale_operator", "mask_operator", "random_mask",
    "uniform_blur",
]


def _shape(shape, name: str = "in_shape") -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) == 0 or any(s < 1 for s in shape):
        raise ValueError(f"{name}: expected one example's shape (positive ints, e.g. (H, W, C) or (d,)), got {shape}.")
    return shape


class LinearOperator(eqx.Module):
    r"""Abstract linear operator :math:`A: \mathbb R^{D} \to \mathbb R^{M}` applied per example.

    Subclasses define :attr:`in_shape`, :attr:`out_shape`, :meth:`forward` and :meth:`adjoint`; they
    may override :meth:`aat_diag` and :meth:`adjoint_solve` with closed forms. Inputs carry a leading
    batch axis: ``forward: [B, *in_shape] -> [B, *out_shape]``.
    """

    in_shape: eqx.AbstractVar[tuple[int, ...]]

    @property
    @abc.abstractmethod
    def out_shape(self) -> tuple[int, ...]:
        """One observation's shape M."""

    @abc.abstractmethod
    def forward(self, x: jax.Array) -> jax.Array:
        """:math:`A x`: [B, *D] -> [B, *M]."""

    @abc.abstractmethod
    def adjoint(self, y: jax.Array) -> jax.Array:
        r""":math:`A^\top y`: [B, *M] -> [B, *D]."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.forward(x)

    @property
    def in_dim(self) -> int:
        return math.prod(self.in_shape)

    @property
    def out_dim(self) -> int:
        return math.prod(self.out_shape)

    def _check(self, name: str, a, shape: tuple[int, ...]) -> jax.Array:
        a = jnp.asarray(a)
        if a.ndim != len(shape) + 1 or tuple(a.shape[1:]) != tuple(shape):
            raise ValueError(f"{type(self).__name__}: {name} expected shape [B, *{shape}], got {tuple(a.shape)}.")
        return a

    def _check_x(self, x):
        return self._check("x", x, self.in_shape)

    def _check_y(self, y):
        return self._check("y", y, self.out_shape)

    def aat_diag(self) -> jax.Array | None:
        r"""The diagonal of :math:`AA^\top` (shape ``out_shape``) if :math:`AA^\top` is diagonal, else None."""
        return None

    def matrix(self) -> jax.Array:
        """The dense matrix ``[m, d]`` of A on flattened examples (costs d forward calls)."""
        eye = jnp.eye(self.in_dim, dtype=jnp.float32).reshape((self.in_dim,) + self.in_shape)
        return self.forward(eye).reshape(self.in_dim, self.out_dim).T

    def adjoint_solve(self, v: jax.Array, noise_var, r2, *, method: str = "auto", rtol: float = 1e-6,
                      max_steps: int | None = None) -> jax.Array:
        r""":math:`A^\top(\sigma^2 I + r^2 AA^\top)^{-1} v` for ``v: [B, *M]``; ``noise_var`` =
        :math:`\sigma^2 \ge 0` (scalar), ``r2`` = :math:`r^2 \ge 0` (scalar or [B]). Returns [B, *D].

        ``method``: ``"auto"`` (the operator's closed form when it has one, else CG), ``"cg"``
        (conjugate gradients through lineax on the batch's block-diagonal system; needs the matrix to
        be positive definite: :math:`\sigma^2 > 0` or :math:`A A^\top` invertible), ``"diag"``
        (requires :meth:`aat_diag`). Where :math:`\sigma^2 + r^2 (AA^\top)_{ii} = 0` (a zero row of A
        and no noise) the entry contributes 0: the pseudo-inverse.
        """
        v = self._check_y(v)
        if method not in ("auto", "cg", "diag"):
            raise ValueError(f"method: expected 'auto', 'cg' or 'diag', got {method!r}.")
        aat = self.aat_diag()
        if method == "diag" or (method == "auto" and aat is not None):
            if aat is None:
                raise ValueError(f"method='diag': {type(self).__name__} has no diagonal A A^T (use 'cg' or 'auto').")
            c = noise_var + _per_example(r2, v) * jnp.asarray(aat, v.dtype)
            return self.adjoint(jnp.where(c > 0, v / jnp.where(c > 0, c, 1.0), 0.0))
        return self.adjoint(self._cg_solve(v, noise_var, r2, rtol, max_steps))

    def _cg_solve(self, v, noise_var, r2, rtol, max_steps):
        import lineax as lx

        r2b = _per_example(r2, v)

        def matvec(u):
            return noise_var * u + r2b * self.forward(self.adjoint(u))

        op = lx.FunctionLinearOperator(matvec, jax.ShapeDtypeStruct(v.shape, v.dtype),
                                       tags=(lx.symmetric_tag, lx.positive_semidefinite_tag))
        steps = max_steps if max_steps is not None else 4 * self.out_dim + 50
        sol = lx.linear_solve(op, v, lx.CG(rtol=rtol, atol=rtol, max_steps=steps), throw=False)
        return sol.value


def _per_example(coef, ref: jax.Array) -> jax.Array:
    """A scalar or [B] coefficient shaped to broadcast against ``ref: [B, *M]``."""
    coef = jnp.asarray(coef, ref.dtype)
    if coef.ndim == 0:
        return coef
    return coef.reshape(coef.shape[:1] + (1,) * (ref.ndim - 1))


class SVDOperator(LinearOperator):
    r"""A linear operator with an implicit SVD :math:`A = U\Sigma V^\top` (see the module docstring).

    Subclasses define :meth:`singulars` ([d], >= 0), :meth:`vt`, :meth:`v`, :meth:`ut`, :meth:`u`;
    :meth:`forward`, :meth:`adjoint`, :meth:`pinv` and :meth:`adjoint_solve` follow (subclasses may
    override forward/adjoint with faster direct forms).
    """

    @abc.abstractmethod
    def singulars(self) -> jax.Array:
        """Singular values aligned with the spectral coordinates: [d] (zeros where A sees nothing)."""

    @abc.abstractmethod
    def vt(self, x: jax.Array) -> jax.Array:
        r""":math:`V^\top x`: [B, *D] -> [B, d]."""

    @abc.abstractmethod
    def v(self, z: jax.Array) -> jax.Array:
        r""":math:`V z`: [B, d] -> [B, *D]."""

    @abc.abstractmethod
    def ut(self, y: jax.Array) -> jax.Array:
        r"""The first d coordinates of :math:`U^\top y` (zero-padded when m < d): [B, *M] -> [B, d]."""

    @abc.abstractmethod
    def u(self, c: jax.Array) -> jax.Array:
        r""":math:`U c` for spectral coordinates c: [B, d] -> [B, *M] (coordinates beyond m ignored)."""

    def forward(self, x):
        return self.u(self.singulars() * self.vt(self._check_x(x)))

    def adjoint(self, y):
        return self.v(self.singulars() * self.ut(self._check_y(y)))

    def pinv(self, y: jax.Array) -> jax.Array:
        r"""Moore-Penrose pseudo-inverse :math:`A^+ y = V(s^+ \odot U^\top y)`: [B, *M] -> [B, *D]."""
        s = self.singulars()
        return self.v(jnp.where(s > 0, self.ut(self._check_y(y)) / jnp.where(s > 0, s, 1.0), 0.0))

    def adjoint_solve(self, v, noise_var, r2, *, method: str = "auto", rtol: float = 1e-6, max_steps=None):
        r"""As :meth:`LinearOperator.adjoint_solve`; ``"auto"`` and ``"svd"`` use
        :math:`A^\top(\sigma^2 + r^2 AA^\top)^{-1} v = V\big(\tfrac{s}{\sigma^2 + r^2 s^2} \odot U^\top v\big)`."""
        if method not in ("auto", "svd"):
            return super().adjoint_solve(v, noise_var, r2, method=method, rtol=rtol, max_steps=max_steps)
        v = self._check_y(v)
        s = self.singulars()
        c = noise_var + jnp.asarray(r2, v.dtype).reshape(-1, 1) * s**2
        return self.v(jnp.where(c > 0, s * self.ut(v) / jnp.where(c > 0, c, 1.0), 0.0))


# --- inpainting -------------------------------------------------------------------------------

class Inpainting(SVDOperator):
    r"""Inpainting: :math:`A x = m \odot x` with ``mask`` m of one example's shape (1 = observed, 0 =
    missing; values in [0, 1]). ``y`` has the data's shape (missing entries are ignored). A is
    diagonal: :math:`AA^\top = m^2`, :math:`V = U = I`, :math:`s = m` (flattened)."""

    mask: jax.Array
    in_shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, mask, shape=None):
        mask = jnp.asarray(mask, jnp.float32)
        shape = _shape(mask.shape if shape is None else shape, "shape")
        check_broadcasts_to("mask", mask.shape, shape, hint=" (one example's shape)")
        if is_concrete(mask):
            if bool(np.any((np.asarray(mask) < 0) | (np.asarray(mask) > 1))):
                raise ValueError("mask: expected values in [0, 1] (1 = observed).")
        self.mask = jnp.broadcast_to(mask, shape)
        self.in_shape = shape

    @property
    def out_shape(self):
        return self.in_shape

    def forward(self, x):
        return self._check_x(x) * self.mask.astype(jnp.asarray(x).dtype)

    def adjoint(self, y):
        return self._check_y(y) * self.mask.astype(jnp.asarray(y).dtype)

    def aat_diag(self):
        return self.mask**2

    def singulars(self):
        return self.mask.reshape(-1)

    def vt(self, x):
        return x.reshape(x.shape[0], -1)

    def v(self, z):
        return z.reshape((z.shape[0],) + self.in_shape)

    ut = vt
    u = v


def random_mask(key: jax.Array, shape, keep: float, *, channels_shared: bool = True) -> jax.Array:
    """A random 0/1 mask of one example's ``shape``, each entry kept with probability ``keep``.
    ``channels_shared``: for image shapes ``(H, W, C)`` one draw per pixel (mask ``[H, W, 1]`` broadcast)."""
    shape = _shape(shape, "shape")
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"keep: expected a probability in [0, 1], got {keep}.")
    draw = shape[:-1] + (1,) if channels_shared and len(shape) == 3 else shape
    return jnp.broadcast_to(jax.random.bernoulli(key, keep, draw).astype(jnp.float32), shape)


def box_mask(shape, top: int, left: int, height: int, width: int) -> jax.Array:
    """A 0/1 mask of image ``shape`` ``(H, W, C)`` that is 0 on the box rows ``top:top+height``,
    columns ``left:left+width`` (all channels) and 1 elsewhere."""
    shape = _shape(shape, "shape")
    if len(shape) != 3:
        raise ValueError(f"box_mask: expected an image shape (H, W, C), got {shape}.")
    h, w, _ = shape
    if not (0 <= top < top + height <= h and 0 <= left < left + width <= w):
        raise ValueError(f"box_mask: box rows {top}:{top + height}, cols {left}:{left + width} outside the {h}x{w} image.")
    m = np.ones(shape, np.float32)
    m[top:top + height, left:left + width, :] = 0.0
    return jnp.asarray(m)


def mask_operator(mask) -> tuple[LinearOp, jax.Array]:
    """The ``(forward, aat)`` pair of inpainting for :func:`jaxscore.guidance.pigdm` / ``dps``:
    ``forward(x) = mask * x`` with ``mask`` broadcastable to one example (e.g. ``[H, W, 1]`` for
    ``[B, H, W, C]`` images) or to the batch ``[B, *D]``; ``aat = mask**2``. Shape-free; the full
    interface (adjoint, SVD, pseudo-inverse) is :class:`Inpainting`. ``forward(x)`` raises
    ``ValueError`` at trace time when ``mask`` does not broadcast to ``x``'s shape."""
    mask = jnp.asarray(mask, jnp.float32)

    def forward(x):
        check_broadcasts_to("mask", mask.shape, x.shape,
                            hint=" (the data's shape [B, *D]; a mask of one example's shape, e.g. [H, W, 1] for "
                                 "[B, H, W, C] images, broadcasts)")
        return x * mask.astype(x.dtype)

    return forward, mask**2


def grayscale_operator(channels: int = 3) -> tuple[LinearOp, float]:
    """The ``(forward, aat)`` pair of colorization: ``A x`` = the channel mean of NHWC images,
    ``[B, H, W, C] -> [B, H, W, 1]``, :math:`AA^\\top = I / C`. Shape-free; the full interface is
    :class:`Colorization`."""

    def forward(x):
        if x.shape[-1] != channels:
            raise ValueError(f"grayscale_operator: expected {channels} channels on the last axis, got shape {x.shape}.")
        return jnp.mean(x, axis=-1, keepdims=True)

    return forward, 1.0 / channels


# --- group means: colorization and super-resolution ---------------------------------------------

def _mean_basis(g: int) -> np.ndarray:
    """Orthonormal [g, g] matrix whose first column is 1/sqrt(g) (Householder-free: QR of [1 | I])."""
    q, _ = np.linalg.qr(np.concatenate([np.ones((g, 1)), np.eye(g)[:, 1:]], axis=1))
    return (q * np.sign(q[0, 0])).astype(np.float32)


class _GroupMean(SVDOperator):
    r"""Each output is the mean of a group of g inputs: ``groups(x) -> [B, m, g]``, ``ungroup`` its inverse.
    Spectral layout: the m group-mean coordinates first (singular value :math:`1/\sqrt g`), then
    the :math:`(g-1)m` null-space coordinates (0)."""

    basis: jax.Array  # [g, g], first column 1/sqrt(g)

    @abc.abstractmethod
    def _groups(self, x):
        """[B, *D] -> [B, m, g]"""

    @abc.abstractmethod
    def _ungroup(self, z):
        """[B, m, g] -> [B, *D]"""

    @abc.abstractmethod
    def _to_y(self, means):
        """[B, m] -> [B, *M]"""

    @property
    def _g(self) -> int:
        return self.basis.shape[0]

    def forward(self, x):
        return self._to_y(jnp.mean(self._groups(self._check_x(x)), axis=-1))

    def adjoint(self, y):
        y = self._check_y(y).reshape(y.shape[0], -1)
        return self._ungroup(jnp.broadcast_to(y[..., None] / self._g, y.shape + (self._g,)))

    def aat_diag(self):
        return jnp.full(self.out_shape, 1.0 / self._g, jnp.float32)

    def singulars(self):
        m = self.out_dim
        return jnp.concatenate([jnp.full((m,), 1.0 / math.sqrt(self._g), jnp.float32),
                                jnp.zeros((m * (self._g - 1),), jnp.float32)])

    def vt(self, x):
        c = jnp.einsum("bmg,gh->bhm", self._groups(x), self.basis.astype(x.dtype))
        return c.reshape(x.shape[0], -1)

    def v(self, z):
        c = z.reshape(z.shape[0], self._g, self.out_dim)
        return self._ungroup(jnp.einsum("bhm,gh->bmg", c, self.basis.astype(z.dtype)))

    def ut(self, y):
        y = y.reshape(y.shape[0], -1)
        return jnp.concatenate([y, jnp.zeros((y.shape[0], self.in_dim - self.out_dim), y.dtype)], axis=1)

    def u(self, c):
        return self._to_y(c[:, : self.out_dim])


def _image_shape(shape, who: str) -> tuple[int, int, int]:
    shape = _shape(shape, "shape")
    if len(shape) != 3:
        raise ValueError(f"{who}: expected an image shape (H, W, C), got {shape}.")
    return shape


class Colorization(_GroupMean):
    r"""Colorization: the channel mean :math:`A x = \tfrac1C\sum_c x_{\cdot\cdot c}`,
    ``[H, W, C] -> [H, W, 1]``; :math:`AA^\top = I/C`, per pixel :math:`V` = score_sde's decoupling
    (first column :math:`\mathbf 1/\sqrt C`)."""

    in_shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, shape):
        self.in_shape = _image_shape(shape, "Colorization")
        self.basis = jnp.asarray(_mean_basis(self.in_shape[-1]))

    @property
    def out_shape(self):
        return self.in_shape[:2] + (1,)

    def _groups(self, x):
        return x.reshape(x.shape[0], -1, self.in_shape[-1])

    def _ungroup(self, z):
        return z.reshape((z.shape[0],) + self.in_shape)

    def _to_y(self, means):
        return means.reshape((means.shape[0],) + self.out_shape)


class SuperResolution(_GroupMean):
    r"""Super-resolution by average pooling: each ``factor x factor`` block of every channel becomes its
    mean, ``[H, W, C] -> [H/f, W/f, C]``; :math:`AA^\top = I/f^2`."""

    in_shape: tuple[int, ...] = eqx.field(static=True)
    factor: int = eqx.field(static=True)

    def __init__(self, shape, factor: int):
        h, w, c = _image_shape(shape, "SuperResolution")
        f = int(factor)
        if f < 1 or h % f or w % f:
            raise ValueError(f"factor: expected a positive divisor of H = {h} and W = {w}, got {factor}.")
        self.in_shape, self.factor = (h, w, c), f
        self.basis = jnp.asarray(_mean_basis(f * f))

    @property
    def out_shape(self):
        h, w, c = self.in_shape
        return (h // self.factor, w // self.factor, c)

    def _groups(self, x):
        h, w, c = self.in_shape
        f = self.factor
        b = x.reshape(x.shape[0], h // f, f, w // f, f, c).transpose(0, 1, 3, 5, 2, 4)
        return b.reshape(x.shape[0], -1, f * f)

    def _ungroup(self, z):
        h, w, c = self.in_shape
        f = self.factor
        b = z.reshape(z.shape[0], h // f, w // f, c, f, f).transpose(0, 1, 4, 2, 5, 3)
        return b.reshape((z.shape[0],) + self.in_shape)

    def _to_y(self, means):
        return means.reshape((means.shape[0],) + self.out_shape)


# --- deblurring -----------------------------------------------------------------------------------

def _centred_kernel(values_1d: np.ndarray, h: int, w: int) -> np.ndarray:
    """Separable kernel ``k[i, j] = a[i] a[j]`` placed with its centre at (0, 0) on an h x w torus
    (even under circular reflection), normalised to sum 1."""
    r = (len(values_1d) - 1) // 2
    k = np.zeros((h, w))
    for i, a in enumerate(values_1d):
        for j, b in enumerate(values_1d):
            k[(i - r) % h, (j - r) % w] += a * b
    return (k / k.sum()).astype(np.float32)


class Blur(SVDOperator):
    r"""Deblurring: circular 2-D convolution of each channel with ``kernel`` ``[H, W]`` (index (0, 0) is
    the centre; kernels must be even under circular reflection, :math:`k_{-i,-j} = k_{ij}`):
    :math:`A x = \mathcal F^{-1}(\hat k \odot \mathcal F x)`, ``[H, W, C] -> [H, W, C]``, by FFT. For an
    even kernel :math:`\hat k` is real, :math:`A = A^\top`, and the SVD is the Hartley one (module
    docstring). :math:`AA^\top` is not diagonal in pixel space. Build with :func:`gaussian_blur` or
    :func:`uniform_blur`."""

    kernel_fft: jax.Array  # [H, W] real DFT of the kernel
    in_shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, kernel, shape):
        shape = _image_shape(shape, "Blur")
        kernel = np.asarray(kernel, np.float64)
        if kernel.shape != shape[:2]:
            raise ValueError(f"kernel: expected shape [H, W] = {shape[:2]} (the image's), got {kernel.shape}.")
        reflected = np.roll(kernel[::-1, ::-1], (1, 1), axis=(0, 1))
        if not np.allclose(kernel, reflected, atol=1e-7 * np.abs(kernel).max()):
            raise ValueError("kernel: expected a kernel even under circular reflection (k[-i, -j] = k[i, j], centre "
                             "at index (0, 0)); its SVD uses that its DFT is real.")
        self.in_shape = shape
        self.kernel_fft = jnp.asarray(np.real(np.fft.fft2(kernel)), jnp.float32)

    @property
    def out_shape(self):
        return self.in_shape

    def forward(self, x):
        x = self._check_x(x)
        xf = jnp.fft.fft2(x, axes=(1, 2))
        return jnp.real(jnp.fft.ifft2(xf * self.kernel_fft[None, :, :, None], axes=(1, 2))).astype(x.dtype)

    def adjoint(self, y):
        r""":math:`A^\top y = A y` (an even kernel's convolution is symmetric)."""
        return self.forward(self._check("y", y, self.out_shape))

    def _hartley(self, x):
        f = jnp.fft.fft2(x, axes=(1, 2))
        n = self.in_shape[0] * self.in_shape[1]
        return ((jnp.real(f) - jnp.imag(f)) / math.sqrt(n)).astype(x.dtype)

    def singulars(self):
        return jnp.broadcast_to(jnp.abs(self.kernel_fft)[..., None], self.in_shape).reshape(-1)

    def _sign(self):
        return jnp.where(self.kernel_fft >= 0, 1.0, -1.0)[None, :, :, None]

    def vt(self, x):
        return self._hartley(x).reshape(x.shape[0], -1)

    def v(self, z):
        return self._hartley(z.reshape((z.shape[0],) + self.in_shape))

    def ut(self, y):
        return (self._sign() * self._hartley(y)).reshape(y.shape[0], -1)

    def u(self, c):
        return self._hartley(self._sign() * c.reshape((c.shape[0],) + self.in_shape))


def gaussian_blur(shape, std: float, size: int | None = None) -> Blur:
    """Circular Gaussian blur of images ``shape`` ``(H, W, C)`` with standard deviation ``std`` pixels,
    kernel ``size`` (odd; default ``2 * ceil(3 std) + 1``, at most the image)."""
    if not std > 0:
        raise ValueError(f"std: expected > 0 pixels, got {std}.")
    h, w, _ = _image_shape(shape, "gaussian_blur")
    size = int(size) if size is not None else min(2 * math.ceil(3 * std) + 1, 2 * ((min(h, w) - 1) // 2) + 1)
    if size < 1 or size % 2 == 0 or size > min(h, w):
        raise ValueError(f"size: expected an odd kernel size <= min(H, W) = {min(h, w)}, got {size}.")
    r = (size - 1) // 2
    a = np.exp(-0.5 * (np.arange(-r, r + 1) / std) ** 2)
    return Blur(_centred_kernel(a, h, w), shape)


def uniform_blur(shape, size: int) -> Blur:
    """Circular box (uniform) blur of images ``shape`` ``(H, W, C)``: the mean over a ``size x size``
    window (odd ``size``). Its DFT changes sign and has near-zero values: an ill-posed deblurring."""
    h, w, _ = _image_shape(shape, "uniform_blur")
    size = int(size)
    if size < 1 or size % 2 == 0 or size > min(h, w):
        raise ValueError(f"size: expected an odd window <= min(H, W) = {min(h, w)}, got {size}.")
    return Blur(_centred_kernel(np.ones(size), h, w), shape)


# --- any matrix -----------------------------------------------------------------------------------

class DenseOperator(SVDOperator):
    r"""Any matrix ``A [m, d]`` acting on flattened examples of ``shape`` (default ``(d,)``), with its
    SVD computed once (numpy, float64) at construction: the DDRM view of a general operator."""

    a: jax.Array  # [m, d]
    u_mat: jax.Array  # [m, m]
    s: jax.Array  # [d] (zero-padded)
    vt_mat: jax.Array  # [d, d]
    in_shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, a, shape=None):
        a = np.asarray(a, np.float64)
        if a.ndim != 2:
            raise ValueError(f"a: expected a matrix [m, d], got shape {a.shape}.")
        m, d = a.shape
        shape = (d,) if shape is None else _shape(shape, "shape")
        if math.prod(shape) != d:
            raise ValueError(f"shape: expected {d} entries per example (columns of a), got {shape}.")
        u, s, vt = np.linalg.svd(a, full_matrices=True)
        s_full = np.zeros(d)
        s_full[: len(s)] = s
        self.a, self.u_mat, self.s, self.vt_mat = (jnp.asarray(z, jnp.float32) for z in (a, u, s_full, vt))
        self.in_shape = shape

    @property
    def out_shape(self):
        return (self.a.shape[0],)

    def forward(self, x):
        x = self._check_x(x)
        return x.reshape(x.shape[0], -1) @ self.a.T.astype(x.dtype)

    def adjoint(self, y):
        y = self._check_y(y)
        return (y @ self.a.astype(y.dtype)).reshape((y.shape[0],) + self.in_shape)

    def singulars(self):
        return self.s

    def vt(self, x):
        return x.reshape(x.shape[0], -1) @ self.vt_mat.T

    def v(self, z):
        return (z @ self.vt_mat).reshape((z.shape[0],) + self.in_shape)

    def ut(self, y):
        m, d = self.a.shape
        c = y @ self.u_mat  # U^T y, [B, m]
        return c[:, :d] if m >= d else jnp.concatenate([c, jnp.zeros((c.shape[0], d - m), c.dtype)], axis=1)

    def u(self, c):
        m, d = self.a.shape
        c = c[:, :m] if d >= m else jnp.concatenate([c, jnp.zeros((c.shape[0], m - d), c.dtype)], axis=1)
        return c @ self.u_mat.T


class FunctionOperator(LinearOperator):
    """Any linear per-example function ``fn: [B, *D] -> [B, *M]`` as an operator; the adjoint is
    ``jax.linear_transpose``. No closed forms: :meth:`adjoint_solve` runs conjugate gradients."""

    fn: Callable = eqx.field(static=True)
    in_shape: tuple[int, ...] = eqx.field(static=True)
    _out_shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, fn: Callable, shape):
        if not callable(fn):
            raise TypeError(f"fn: expected a linear callable [B, *D] -> [B, *M], got {type(fn).__name__}.")
        self.fn, self.in_shape = fn, _shape(shape, "shape")
        out = jax.eval_shape(fn, jax.ShapeDtypeStruct((1,) + self.in_shape, jnp.float32))
        self._out_shape = tuple(out.shape[1:])

    @property
    def out_shape(self):
        return self._out_shape

    def forward(self, x):
        return self.fn(self._check_x(x))

    def adjoint(self, y):
        y = self._check_y(y)
        (x,) = jax.linear_transpose(self.fn, jax.ShapeDtypeStruct((y.shape[0],) + self.in_shape, y.dtype))(y)
        return x
