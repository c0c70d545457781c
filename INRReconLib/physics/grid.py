"""The image grid a reconstruction lives on (docs/measurement-format.md `/grid`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class ImageGrid:
    """Voxel grid in ITK/SimpleITK conventions (LPS, millimetres).

    size:      (nx, ny, nz) voxels, ITK order; nz == 1 for a 2D image.
    spacing:   (sx, sy, sz) mm.
    origin:    LPS position (mm) of the centre of voxel (0, 0, 0).
    direction: 9 floats, 3x3 row-major, as `SimpleITK.Image.GetDirection()`.

    Arrays on the grid are NumPy order `shape == (nz, ny, nx)`. The *grid frame* used by the
    physics has its origin at the grid centre and its axes along the index axes (mm).
    """

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def __post_init__(self):
        object.__setattr__(self, "size", tuple(int(v) for v in self.size))
        object.__setattr__(self, "spacing", tuple(float(v) for v in self.spacing))
        object.__setattr__(self, "origin", tuple(float(v) for v in self.origin))
        object.__setattr__(self, "direction", tuple(float(v) for v in self.direction))
        if len(self.size) != 3 or min(self.size) < 1:
            raise InputError("/grid size", f"must be 3 positive integers [nx, ny, nz], got {list(self.size)}.",
                             "Use nz = 1 for a 2D image.")
        if len(self.spacing) != 3 or not all(np.isfinite(self.spacing)) or min(self.spacing) <= 0:
            raise InputError("/grid spacing_mm", f"must be 3 positive finite numbers (mm), got {list(self.spacing)}.")
        if len(self.origin) != 3 or not all(np.isfinite(self.origin)):
            raise InputError("/grid origin_mm", f"must be 3 finite numbers (mm), got {list(self.origin)}.")
        d = np.asarray(self.direction, dtype=float)
        if d.size != 9 or not np.all(np.isfinite(d)):
            raise InputError("/grid direction", "must be 9 finite numbers (3x3 row-major).")
        if not np.allclose(d.reshape(3, 3) @ d.reshape(3, 3).T, np.eye(3), atol=1e-4):
            raise InputError("/grid direction", "is not an orthonormal 3x3 matrix.",
                             "Write the direction cosines as SimpleITK's GetDirection() returns them.")

    @property
    def shape(self) -> tuple[int, int, int]:
        """NumPy array shape (nz, ny, nx)."""
        return (self.size[2], self.size[1], self.size[0])

    @property
    def is_2d(self) -> bool:
        return self.size[2] == 1

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        """Physical extent (x, y, z) in mm, voxel edge to voxel edge."""
        return tuple(n * s for n, s in zip(self.size, self.spacing))

    @property
    def centre_mm(self) -> np.ndarray:
        """LPS position (mm) of the grid's centre (the origin of the grid frame)."""
        d = np.asarray(self.direction).reshape(3, 3)
        return np.asarray(self.origin) + d @ ((np.asarray(self.size) - 1) / 2.0 * np.asarray(self.spacing))

    def voxel_centres(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Grid-frame coordinates (mm) of voxel centres along x, y, z (1D arrays)."""
        return tuple((np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(self.size, self.spacing))

    def refined(self, factor: int, in_plane: bool = False) -> "ImageGrid":
        """The grid with `factor`× more voxels along each axis (x and y only for a 2D grid or with
        `in_plane`), covering the same extent with the same centre and direction."""
        factor = int(factor)
        if factor < 1:
            raise InputError("upsample", f"must be a positive integer, got {factor}.")
        refine_z = not (in_plane or self.is_2d)
        f = np.array([factor, factor, factor if refine_z else 1])
        size = np.asarray(self.size) * f
        spacing = np.asarray(self.spacing) / f
        d = np.asarray(self.direction).reshape(3, 3)
        origin = self.centre_mm - d @ ((size - 1) / 2.0 * spacing)
        return ImageGrid(tuple(int(n) for n in size), tuple(spacing), tuple(origin), self.direction)

    def to_dict(self) -> dict:
        return {"size": list(self.size), "spacing_mm": list(self.spacing),
                "origin_mm": list(self.origin), "direction": list(self.direction)}

    @classmethod
    def from_dict(cls, d: dict) -> "ImageGrid":
        return cls(tuple(d["size"]), tuple(d["spacing_mm"]), tuple(d.get("origin_mm", (0, 0, 0))),
                   tuple(d.get("direction", (1, 0, 0, 0, 1, 0, 0, 0, 1))))

    @classmethod
    def centred(cls, shape_zyx, spacing_xyz) -> "ImageGrid":
        """A grid with identity direction whose centre is at LPS (0, 0, 0)."""
        nz, ny, nx = shape_zyx
        size = (nx, ny, nz)
        origin = tuple(-(n - 1) / 2.0 * s for n, s in zip(size, spacing_xyz))
        return cls(size, tuple(spacing_xyz), origin)
