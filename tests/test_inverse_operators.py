"""Degradation operators: adjoints (<Ax, y> = <x, A^T y>), implicit SVDs against the dense matrix's,
pseudo-inverses and the ΠGDM solve A^T (s^2 I + r^2 A A^T)^{-1} (closed form vs CG vs dense)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscore import guidance
from jaxscore.inverse import (
    Blur,
    Colorization,
    DenseOperator,
    FunctionOperator,
    Inpainting,
    SuperResolution,
    SVDOperator,
    box_mask,
    gaussian_blur,
    random_mask,
    uniform_blur,
)

SHAPE = (4, 4, 3)
RNG = np.random.default_rng(0)
OPERATORS = {
    "random_inpainting": Inpainting(random_mask(jax.random.key(0), SHAPE, 0.5)),
    "box_inpainting": Inpainting(box_mask(SHAPE, 1, 1, 2, 2)),
    "colorization": Colorization(SHAPE),
    "superres_x2": SuperResolution(SHAPE, 2),
    "superres_x4": SuperResolution(SHAPE, 4),
    "gaussian_blur": gaussian_blur(SHAPE, 1.0),
    "uniform_blur": uniform_blur(SHAPE, 3),
    "dense_wide": DenseOperator(RNG.standard_normal((20, 48)) / 5, SHAPE),
    "dense_tall": DenseOperator(RNG.standard_normal((9, 5)), (5,)),
    "function": FunctionOperator(lambda x: 2.0 * x[:, ::2, ::2, :1] - x[:, 1::2, ::2, 2:], SHAPE),
}


NOISE_VAR, R2 = 0.05, np.array([0.3, 1.0, 2.5])


CG_CHECKED = ("gaussian_blur", "function")  # non-diagonal A A^T; ΠGDM through CG: tests/test_inverse_methods.py


def _probe_one(name, x, y):
    op = OPERATORS[name]
    out = {"ax": op.forward(x), "aty": op.adjoint(y), "matrix": op.matrix(),
           "solve": op.adjoint_solve(y, NOISE_VAR, jnp.asarray(R2))}
    if name in CG_CHECKED:
        out["solve_cg"] = op.adjoint_solve(y, NOISE_VAR, jnp.asarray(R2), method="cg")
    if op.aat_diag() is not None:
        out["aat"] = jnp.broadcast_to(op.aat_diag(), op.out_shape)
    if isinstance(op, SVDOperator):
        s = op.singulars()
        out.update(s=s, vvt=op.v(op.vt(x)), usvt=op.u(s * op.vt(x)), vsut=op.v(s * op.ut(y)), pinv=op.pinv(y))
    return out


@functools.lru_cache(maxsize=None)
def _all_probes():
    """Everything the tests compare, for every operator, from one jitted call (one compile)."""
    inputs = {name: (jax.random.normal(jax.random.key(1), (3,) + op.in_shape),
                     jax.random.normal(jax.random.key(2), (3,) + op.out_shape)) for name, op in OPERATORS.items()}
    outs = jax.jit(lambda inp: {n: _probe_one(n, *xy) for n, xy in inp.items()})(inputs)
    to_np = functools.partial(jax.tree_util.tree_map, lambda a: np.asarray(a, np.float64))
    return to_np(inputs), to_np(outs)


def _probe(name):
    inputs, outs = _all_probes()
    return (OPERATORS[name], *inputs[name], outs[name])


def _flat(a):
    return np.asarray(a, np.float64).reshape(a.shape[0], -1)


@pytest.mark.parametrize("name", OPERATORS)
def test_adjoint_and_matrix(name):
    op, x, y, out = _probe(name)
    ax, aty = out["ax"], out["aty"]
    assert ax.shape == (3,) + op.out_shape and aty.shape == (3,) + op.in_shape
    lhs, rhs = np.sum(_flat(ax) * _flat(y), 1), np.sum(_flat(x) * _flat(aty), 1)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-5, atol=1e-5)
    m = out["matrix"]
    assert m.shape == (op.out_dim, op.in_dim)
    np.testing.assert_allclose(_flat(ax), _flat(x) @ m.T, atol=1e-5)
    if "aat" in out:  # a claimed diagonal A A^T is the true one
        np.testing.assert_allclose(m @ m.T, np.diag(out["aat"].reshape(-1)), atol=1e-6)


@pytest.mark.parametrize("name", [n for n, op in OPERATORS.items() if isinstance(op, SVDOperator)])
def test_implicit_svd_matches_the_dense_one(name):
    op, x, y, out = _probe(name)
    s = out["s"]
    assert s.shape == (op.in_dim,) and np.all(s >= 0)
    np.testing.assert_allclose(out["vvt"], x, atol=1e-5)  # V orthonormal
    np.testing.assert_allclose(out["usvt"], out["ax"], atol=1e-5)  # A = U S V^T
    np.testing.assert_allclose(out["vsut"], out["aty"], atol=1e-5)  # A^T = V S U^T
    m = out["matrix"]
    dense_s = np.linalg.svd(m, compute_uv=False)
    np.testing.assert_allclose(np.sort(s)[::-1][: len(dense_s)], dense_s, atol=1e-5)
    if np.min(dense_s) > 1e-2 * np.max(dense_s) or np.sum(dense_s > 1e-6) < len(dense_s):  # well-posed pinv
        np.testing.assert_allclose(_flat(out["pinv"]), _flat(y) @ np.linalg.pinv(m, rcond=1e-5).T, atol=1e-4)


@pytest.mark.parametrize("name", OPERATORS)
def test_adjoint_solve_closed_form_and_cg_agree_with_dense(name):
    """A^T (s^2 I + r^2 A A^T)^{-1} v with per-example r^2: the operator's own path, CG, and numpy."""
    op, _, v, out = _probe(name)
    m = out["matrix"]
    want = np.stack([m.T @ np.linalg.solve(NOISE_VAR * np.eye(m.shape[0]) + r * m @ m.T, vi)
                     for r, vi in zip(R2, _flat(v))])
    scale = np.abs(want).max()
    np.testing.assert_allclose(_flat(out["solve"]), want, atol=1e-4 * scale)
    if "solve_cg" in out:
        np.testing.assert_allclose(_flat(out["solve_cg"]), want, atol=1e-3 * scale)


def test_blur_operators_and_their_errors():
    g = gaussian_blur(SHAPE, 1.0)
    assert float(jnp.min(g.singulars())) > 0  # a periodised Gaussian's DFT is positive
    u = uniform_blur(SHAPE, 3)
    assert float(jnp.min(u.kernel_fft)) < 0  # the box kernel's changes sign: U carries it
    img = jnp.zeros((1,) + SHAPE).at[0, 2, 2, 0].set(1.0)
    out = np.asarray(u.forward(img))[0, :, :, 0]  # a point spreads to a 3x3 box of 1/9, periodically
    np.testing.assert_allclose(out[1:4, 1:4], np.full((3, 3), 1 / 9), atol=1e-6)
    assert abs(out.sum() - 1.0) < 1e-5
    with pytest.raises(ValueError, match="even under circular reflection"):
        Blur(np.eye(4)[1][None].repeat(4, 0) * np.eye(4)[0][:, None], SHAPE)  # a one-pixel shift
    with pytest.raises(ValueError, match="odd"):
        uniform_blur(SHAPE, 4)


def test_operator_errors_name_expected_and_got():
    op = SuperResolution(SHAPE, 2)
    with pytest.raises(ValueError, match=r"x expected shape \[B, \*\(4, 4, 3\)\], got \(2, 4, 4, 1\)"):
        op.forward(jnp.zeros((2, 4, 4, 1)))
    with pytest.raises(ValueError, match="positive divisor"):
        SuperResolution(SHAPE, 3)
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        Inpainting(jnp.array([2.0, 0.0]))
    with pytest.raises(ValueError, match="diagonal A A"):
        gaussian_blur(SHAPE, 1.0).adjoint_solve(jnp.zeros((1,) + SHAPE), 0.1, 1.0, method="diag")
    with pytest.raises(ValueError, match="box rows"):
        box_mask(SHAPE, 3, 0, 4, 2)


def test_legacy_pairs_are_the_operator_facts():
    """guidance.mask_operator / grayscale_operator (forward, aat) agree with the operator classes."""
    mask = random_mask(jax.random.key(3), SHAPE, 0.4)
    x = jax.random.normal(jax.random.key(4), (2,) + SHAPE)
    fwd, aat = guidance.mask_operator(mask[..., :1])  # broadcasting mask, as the legacy API allows
    np.testing.assert_array_equal(fwd(x), Inpainting(mask).forward(x))
    np.testing.assert_array_equal(jnp.broadcast_to(aat, SHAPE), Inpainting(mask).aat_diag())
    fwd, aat = guidance.grayscale_operator(3)
    col = Colorization(SHAPE)
    np.testing.assert_allclose(fwd(x), col.forward(x), atol=1e-6)
    np.testing.assert_allclose(aat, col.aat_diag(), atol=1e-7)
