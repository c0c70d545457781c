"""The shared numerics: CG, CGLS (with callbacks), the power method, finite differences."""

import pytest
import torch

from INRReconLib.numerics import finite_diff
from INRReconLib.numerics.krylov import cg, cgls, power_method


def _problem(dtype=torch.float64):
    gen = torch.Generator().manual_seed(1)
    A = torch.randn(30, 10, generator=gen, dtype=torch.float64).to(dtype)
    y = torch.randn(30, generator=gen, dtype=torch.float64).to(dtype)
    return A, y


def test_cgls_solves_least_squares_and_damped():
    A, y = _problem()
    x = cgls(lambda v: A @ v, lambda r: A.T @ r, y, torch.zeros(10, dtype=torch.float64), 30)
    assert torch.allclose(x, torch.linalg.lstsq(A, y[:, None]).solution[:, 0], atol=1e-8)
    a = torch.randn(10, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    xd = cgls(lambda v: A @ v, lambda r: A.T @ r, y, torch.zeros(10, dtype=torch.float64), 30, damping=2.0, anchor=a)
    expect = torch.linalg.solve(A.T @ A + 2.0 * torch.eye(10, dtype=torch.float64), A.T @ y + 2.0 * a)
    assert torch.allclose(xd, expect, atol=1e-8)


def test_cgls_callback_sees_the_residual_and_stops():
    A, y = _problem()
    seen = []

    def callback(it, x, r):
        assert torch.allclose(r, y - A @ x, atol=1e-10)  # the residual it hands over is the true one
        seen.append(it)
        return it == 3

    cgls(lambda v: A @ v, lambda r: A.T @ r, y, torch.zeros(10, dtype=torch.float64), 30, callback=callback)
    assert seen == [1, 2, 3]


def test_cg_solves_complex_hermitian_systems_and_stops():
    gen = torch.Generator().manual_seed(3)
    B = torch.randn(12, 12, generator=gen, dtype=torch.complex128)
    M = B.conj().T @ B + 0.5 * torch.eye(12, dtype=torch.complex128)
    b = torch.randn(12, generator=gen, dtype=torch.complex128)
    x = cg(lambda v: M @ v, b, torch.zeros_like(b), 100, tolerance=1e-12)
    assert torch.allclose(M @ x, b, atol=1e-9)
    rel = []
    cg(lambda v: M @ v, b, torch.zeros_like(b), 100, callback=lambda it, x, r: rel.append(r) or it == 4)
    assert len(rel) == 4 and rel[-1] < rel[0]
    # a warm start at the solution stays there
    assert torch.allclose(cg(lambda v: M @ v, b, x, 3), x, atol=1e-9)


def test_power_method_gives_the_operator_norm():
    A, _ = _problem()
    x0 = torch.rand(10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert power_method(lambda v: A.T @ (A @ v), x0, 200) == pytest.approx(float(torch.linalg.matrix_norm(A, 2)),
                                                                           rel=1e-6)


@pytest.mark.parametrize("shape, axes, weights", [
    ((1, 9, 7), [1, 2], None),              # a 2D image with its z axis
    ((5, 6, 7), [0, 1, 2], [0.5, 1.0, 1.0]),  # 3D, anisotropic voxels
    ((4, 1, 6, 5), [0], None),               # time: frames along the first axis
    ((4, 1, 6, 5), [0, 2, 3], None),         # space and time together
    ((3, 1, 8), [1, 2], None),               # an axis of length one
])
def test_finite_differences_adjoint(shape, axes, weights):
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(shape, generator=gen, dtype=torch.float64)
    q = torch.randn((len(axes),) + shape, generator=gen, dtype=torch.float64)
    lhs = float((finite_diff.gradient(u, axes, weights) * q).sum())
    rhs = float((u * finite_diff.gradient_adjoint(q, axes, weights)).sum())
    assert abs(lhs - rhs) <= 1e-12 * max(abs(lhs), 1.0)
    # complex images (MR) too: ⟨D u, q⟩ = ⟨u, Dᵀ q⟩
    uc = torch.complex(u, u.flip(-1))
    qc = torch.complex(q, -q)
    lhs_c = torch.vdot(finite_diff.gradient(uc, axes, weights).reshape(-1), qc.reshape(-1))
    rhs_c = torch.vdot(uc.reshape(-1), finite_diff.gradient_adjoint(qc, axes, weights).reshape(-1))
    assert abs(complex(lhs_c - rhs_c)) <= 1e-12 * max(abs(complex(lhs_c)), 1.0)


def test_finite_differences_values():
    u = torch.tensor([[1.0, 4.0, 9.0]])
    d = finite_diff.gradient(u, [1])
    assert d.tolist() == [[[3.0, 5.0, 0.0]]]  # forward differences, zero last row (Neumann)
    assert finite_diff.gradient(u, [1], [2.0]).tolist() == [[[6.0, 10.0, 0.0]]]
