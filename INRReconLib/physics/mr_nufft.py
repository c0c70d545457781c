"""Non-Cartesian MR encoding backends: the NUFFT behind MROperator, chosen by the config key `nufft`.

All backends compute the same map (docs/measurement-format.md, MR part):
    k[f, c, m] = s · Σ_r S_c(r) x_f(r) exp(−i ω_{f,m} · (r − r_0)),
with ω in rad/voxel along the image axes (z,) y, x, r_0 the grid centre (voxel n//2) and
s = 1 / √(prod(2 · im_size)): torchkbnufft's norm="ortho" over its 2× oversampled grid, which is
the documented scale of our k-space. The adjoint is the conjugate transpose.

- "torchkbnufft": 6-point Kaiser–Bessel gridding in torch (CPU and CUDA); relative accuracy
  about 1e-3.
- "finufft": the Flatiron exponential-of-semicircle NUFFT (`finufft` on CPU, `cufinufft` on
  CUDA; optional packages), tolerance FINUFFT_EPS.
Each has a Toeplitz normal operator, `toeplitz(weights)`: a convolution on the 2× grid whose
kernel is that backend's own (torchkbnufft's calc_toeplitz_kernel; for finufft `ToeplitzNormal`,
its exact adjoint on the 2× grid: 8e-6 from adjoint(forward)). One kernel for both would change
torchkbnufft's results: the same construction through its adjoint is 5e-4 off its own model and
cost CG-SENSE 0.2 dB on a 64² phantom (23.39 against 23.57 dB).
"auto" picks per device what `inrrecon bench --cases nufft` measured faster (AUTO_NUFFT; on CUDA
nothing was measured yet, and it stays torchkbnufft).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import InputError
from .backends import NUFFTS

FINUFFT_EPS = 1e-5  # single precision; the two backends then agree to ~7e-4 (torchkbnufft's own error)
# CPU: measured (`inrrecon bench --cases nufft`, 2-core CPU; README, Benchmarks): finufft's
# forward + adjoint, one INR step, takes 0.13x (static 256², 8 coils) and 0.58x (dynamic 128²,
# 20 frames) of torchkbnufft's, the Toeplitz normal the same. CUDA: not measured (no GPU lent
# yet; cufinufft is untested), so torchkbnufft stays the choice there.
AUTO_NUFFT = {"cpu": "finufft", "cuda": "torchkbnufft"}


def finufft_available(device) -> bool:
    try:
        if torch.device(device).type == "cuda":
            import cufinufft  # noqa: F401
        else:
            import finufft  # noqa: F401
    except ImportError:
        return False
    return True


def check_nufft(name: str) -> None:
    if name not in NUFFTS:
        raise InputError("nufft", f"must be one of {', '.join(NUFFTS)}, got {name!r}.",
                         "Use 'auto' (the faster one installed) unless you compare backends.")


def choose_nufft(name: str, device) -> str:
    """The backend `name` stands for on `device` (InputError when it is unknown or not installed)."""
    check_nufft(name)
    device = torch.device(device)
    if name == "auto":
        preferred = AUTO_NUFFT.get(device.type, "torchkbnufft")
        return preferred if preferred != "finufft" or finufft_available(device) else "torchkbnufft"
    if name == "finufft" and not finufft_available(device):
        install = ("pip install 'cufinufft>=2.2'" if device.type == "cuda"
                   else "pip install finufft (or pip install -e \".[nufft]\")")
        raise InputError("nufft", f"the finufft backend needs the {'cufinufft' if device.type == 'cuda' else 'finufft'} "
                         f"package on {device.type}.", f"{install}, or use nufft 'torchkbnufft'.")
    return name


def nufft_scale(im_size) -> float:
    return 1.0 / math.sqrt(float(np.prod([2 * n for n in im_size])))


def make_nufft(name: str, omega: torch.Tensor, im_size, smaps, device):
    """The backend object for `name` (already resolved by choose_nufft)."""
    return (FinufftBackend if name == "finufft" else KbNufftBackend)(omega, im_size, smaps, device)


class KbNufftBackend:
    """torchkbnufft. omega [F, ndim, M] (rad/voxel), smaps [C, *im_size] or None."""

    def __init__(self, omega, im_size, smaps, device):
        import torchkbnufft as tkbn

        self.omega, self.im_size = omega, tuple(im_size)
        self.n_frames = omega.shape[0]
        # One frame: the unbatched path, which torchkbnufft parallelises over samples on CPU.
        self._omega_arg = omega[0] if self.n_frames == 1 else omega
        self._nufft = tkbn.KbNufft(im_size=self.im_size, device=device)
        self._nufft_adj = tkbn.KbNufftAdjoint(im_size=self.im_size, device=device)
        self._smaps = None if smaps is None else smaps.reshape(1, smaps.shape[0], *self.im_size)

    def toeplitz(self, weights):
        """x [F, *im_size] -> Aᴴ diag(weights) A x through torchkbnufft's Toeplitz kernel."""
        import torchkbnufft as tkbn

        if self.n_frames == 1:
            kernel = tkbn.calc_toeplitz_kernel(self.omega[0], self.im_size, norm="ortho",
                                               weights=None if weights is None else weights.reshape(1, -1))
        else:
            kernel = tkbn.calc_toeplitz_kernel(self.omega, self.im_size, norm="ortho",
                                               weights=None if weights is None else weights[:, None, :])
        kernel, toep = kernel.to(torch.complex64), tkbn.ToepNufft()

        def normal(x):
            out = toep(x.reshape(self.n_frames, 1, *self.im_size), kernel, smaps=self._smaps, norm="ortho")
            return out.reshape(self.n_frames, *self.im_size)
        return normal

    def forward(self, x):
        img = x.reshape(self.n_frames, 1, *self.im_size)
        return self._nufft(img, self._omega_arg, smaps=self._smaps, norm="ortho")

    def adjoint(self, y):
        return self._nufft_adj(y, self._omega_arg, smaps=self._smaps, norm="ortho")


class FinufftBackend:
    """finufft (CPU, NumPy) or cufinufft (CUDA, torch tensors): one type-2 (forward) and one
    type-1 (adjoint) plan per frame, all coils in one call (n_trans = coils)."""

    def __init__(self, omega, im_size, smaps, device):
        self.device = torch.device(device)
        self.im_size = tuple(im_size)
        self._omega = omega
        self.n_frames, ndim, self.n_samples = omega.shape
        self.smaps = smaps  # [C, *im_size] complex64 or None
        self.n_coils = 1 if smaps is None else smaps.shape[0]
        self.scale = nufft_scale(self.im_size)
        cuda = self.device.type == "cuda"
        if cuda:
            import cufinufft as lib
        else:
            import finufft as lib
        self._cuda = cuda
        options = {"gpu_device_id": self.device.index or 0} if cuda else {"nthreads": max(1, torch.get_num_threads())}
        self._plans = {1: [], 2: []}
        for f in range(self.n_frames):
            # Points as the library wants them: one contiguous float32 array per image axis.
            pts = [omega[f, d].contiguous() if cuda else np.ascontiguousarray(omega[f, d].cpu().numpy(), np.float32)
                   for d in range(ndim)]
            for kind, sign in ((2, -1), (1, 1)):
                plan = lib.Plan(kind, self.im_size, n_trans=self.n_coils, eps=FINUFFT_EPS, isign=sign,
                                dtype="complex64", **options)
                plan.setpts(*pts)
                self._plans[kind].append(plan)

    def _run(self, kind, f, data):
        if self._cuda:
            return torch.as_tensor(self._plans[kind][f].execute(data.contiguous()), device=self.device)
        return torch.from_numpy(self._plans[kind][f].execute(np.ascontiguousarray(data.cpu().numpy())))

    def forward(self, x):
        x = x.reshape(self.n_frames, *self.im_size)
        out = []
        for f in range(self.n_frames):
            coil = x[f][None] if self.smaps is None else x[f][None] * self.smaps
            out.append(self._run(2, f, coil).reshape(self.n_coils, self.n_samples))
        return (torch.stack(out) * self.scale).to(self.device)

    def adjoint(self, y):
        out = []
        for f in range(self.n_frames):
            coil = self._run(1, f, y[f]).reshape(self.n_coils, *self.im_size).to(self.device)
            out.append(coil[0] if self.smaps is None else (coil * self.smaps.conj()).sum(0))
        return torch.stack(out) * self.scale

    def toeplitz(self, weights):
        """x [F, *im_size] -> Aᴴ diag(weights) A x on the 2× grid (ToeplitzNormal)."""
        kernel = ToeplitzNormal(type(self), self._omega, self.im_size, weights, self.device)
        return lambda x: kernel(x, self.smaps)


class ToeplitzNormal:
    """Aᴴ diag(w) A x as one convolution on the 2× grid (no interpolation per call).

    (Aᴴ W A x)(r) = s² Σ_r' x(r') h(r − r'), h(d) = Σ_m w_m exp(i ω_m · d) for |d| < im_size: h is
    the backend's adjoint of w on a grid twice the size (same voxels, so the same ω) over its
    scale, and the sum a circular convolution on that grid, which cannot wrap for |d| < im_size.
    Self-adjoint and plain torch (FFTs), so CG and autograd use it as it is. Per frame, with the
    coil maps applied around it. As accurate as the backend's adjoint (finufft; see above)."""

    def __init__(self, backend_class, omega, im_size, weights, device):
        self.im_size = tuple(im_size)
        big = tuple(2 * n for n in self.im_size)
        self._dims = tuple(range(-len(big), 0))
        n_frames, _, n_samples = omega.shape
        w = torch.ones((n_frames, n_samples), device=device) if weights is None else weights
        psf = backend_class(omega, big, None, device).adjoint(w.reshape(n_frames, 1, n_samples).to(torch.complex64))
        psf = psf.reshape(n_frames, *big) * (nufft_scale(self.im_size) ** 2 / nufft_scale(big))
        self.kernel = torch.fft.fftn(torch.fft.ifftshift(psf, dim=self._dims), dim=self._dims)  # [F, *big]

    def __call__(self, x, smaps):
        """x [F, *im_size], smaps [C, *im_size] or None -> [F, *im_size]."""
        coil = x[:, None] if smaps is None else x[:, None] * smaps[None]
        pad = []
        for n in reversed(self.im_size):
            pad += [0, n]
        k = torch.fft.fftn(torch.nn.functional.pad(coil, pad), dim=self._dims) * self.kernel[:, None]
        out = torch.fft.ifftn(k, dim=self._dims)[(Ellipsis,) + tuple(slice(0, n) for n in self.im_size)]
        return out[:, 0] if smaps is None else (out * smaps.conj()[None]).sum(1)
