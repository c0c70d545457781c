"""Render what a user sees in Slicer's slice views, offscreen, with trame-slicer (real MRML slice
views, OSMesa): the comparison layout prior | reconstruction | difference, and the live preview.

    python Testing/render_screenshots.py [--out docs/screenshots] [--method sirt] [--iterations 40]

Uses the real thorax CT in ../shared/data when present (a slice through the nodule; the prior is
the same slice with the nodule shrunk, as the benchmark cases do), else a synthetic phantom. The
measurement (parallel beam, 60 views) is simulated with the project's projector and reconstructed
by the real worker process, through the same scene code the Slicer module uses.
Needs: pip install "trame-slicer[standalone]"; apt-get install libosmesa6.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkOSOpenGLRenderWindow")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

VIEW_ORDER = ("INRPrior", "INRRecon", "INRDifference", "INRNext")


def make_app(tags, size=(320, 320)):
    """A trame-slicer app whose offscreen slice views carry the comparison layout's tags."""
    from trame_slicer.core import SlicerApp
    from trame_slicer.views import DirectViewFactory, ViewLayoutDefinition
    from trame_slicer.views.view_layout_definition import ViewProps, ViewType

    from INRReconLib.scene.compare import VIEW_COLOURS, VIEW_LABELS

    app = SlicerApp()
    app.view_manager.register_factory(DirectViewFactory(do_render_offscreen=True))
    views = {}
    for tag in tags:
        definition = ViewLayoutDefinition(
            singleton_tag=tag, view_type=ViewType.SLICE_VIEW,
            properties=ViewProps(orientation="Axial", label=VIEW_LABELS.get(tag, tag), color=VIEW_COLOURS.get(tag)))
        view = app.view_manager.create_view(definition)
        view.render_window().SetSize(*size)
        views[tag] = view
    return app, views


def grab(view) -> np.ndarray:
    """RGB uint8 [h, w, 3] of what the view shows now (top row first)."""
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkRenderingCore import vtkWindowToImageFilter

    view.fit_view_to_content()
    view.render()
    f = vtkWindowToImageFilter()
    f.SetInput(view.render_window())
    f.ReadFrontBufferOff()
    f.Update()
    image = f.GetOutput()
    w, h, _ = image.GetDimensions()
    rgb = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(h, w, -1)[..., :3]
    return np.ascontiguousarray(rgb[::-1])


def render_comparison(app, views, prior, recon, next_fraction=None) -> dict:
    """Set up the comparison on the app's scene and grab every view: tag -> RGB array."""
    from INRReconLib.scene.compare import setup_comparison

    comparison = setup_comparison(app.scene, prior, recon, next_fraction=next_fraction)
    return {tag: grab(views[tag]) for tag in comparison.views if tag in views}


def save_png(rgb: np.ndarray, path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, rgb)
    return path


def side_by_side(images, gap=4) -> np.ndarray:
    h = max(i.shape[0] for i in images)
    parts = []
    for n, img in enumerate(images):
        pad = np.zeros((h, img.shape[1], 3), np.uint8)
        pad[:img.shape[0]] = img
        parts.append(pad)
        if n + 1 < len(images):
            parts.append(np.full((h, gap, 3), 40, np.uint8))
    return np.concatenate(parts, axis=1)


def thorax_or_phantom(size=128):
    """(current image, prior image) in 1/mm on a centred 2D grid, and the grid."""
    from INRReconLib.physics.grid import ImageGrid

    try:
        from INRReconLib import cases
        from INRReconLib.io.volume import MU_WATER_PER_MM, hu_to_mu, read_volume

        d = cases.data_dir()
        if d is None:
            raise FileNotFoundError
        hu, grid512 = read_volume(d / cases.CT_FULLRES)
        cur = hu[cases.NODULE_SLICE_FULLRES].astype(np.float32)
        cx, cy = cases.NODULE_CENTRE_FULLRES_XY
        prior, _ = cases.longitudinal_prior(cur, (cy, cx), cases.NODULE_RADIUS_MM / grid512.spacing[0], seed=0)
        f = 512 // size
        pool = lambda a: a.reshape(size, f, size, f).mean(axis=(1, 3))  # noqa: E731
        grid = ImageGrid.centred((1, size, size), (grid512.spacing[0] * f, grid512.spacing[1] * f, 2.0))
        mu = lambda a: np.clip(hu_to_mu(pool(a), MU_WATER_PER_MM), 0, None)[None].astype(np.float32)  # noqa: E731
        return mu(cur), mu(prior), grid, "thorax CT"
    except (FileNotFoundError, ImportError, AttributeError, KeyError):
        grid = ImageGrid.centred((1, size, size), (2.0, 2.0, 2.0))
        y, x = np.mgrid[0:size, 0:size] / size
        body = ((x - 0.5) ** 2 / 0.16 + (y - 0.5) ** 2 / 0.1 < 1) * 0.019
        lesion = lambda r: ((x - 0.4) ** 2 + (y - 0.45) ** 2 < r ** 2) * 0.006  # noqa: E731
        return ((body + lesion(0.07))[None].astype(np.float32), (body + lesion(0.04))[None].astype(np.float32),
                grid, "phantom")


def simulate_parallel(image, grid, n_views=60):
    import torch

    from INRReconLib.io.measurement import Measurement
    from INRReconLib.physics import operator_for
    from INRReconLib.physics.ct_geometry import parallel_geometry

    n_cols = int(np.ceil(np.hypot(grid.size[0], grid.size[1]))) + 4
    angles = np.linspace(0, np.pi, n_views, endpoint=False)
    geometry = parallel_geometry(angles, n_cols=n_cols, col_spacing_mm=grid.spacing[0], row_spacing_mm=grid.spacing[2])
    m = Measurement("CT", np.zeros((n_views, 1, n_cols), np.float32), grid, geometry, {"description": "simulated"})
    with torch.no_grad():
        m.data = operator_for(m, "cpu").forward(torch.from_numpy(image)).numpy().astype(np.float32)
    return m


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    parser.add_argument("--method", default="sirt")
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args(argv)

    from INRReconLib.io.measurement import write_measurement
    from INRReconLib.scene import volumes as V
    from INRReconLib.scene.session import ReconstructionSession
    from INRReconLib.worker.runner import WorkerRunner

    from INRReconLib.io.volume import MU_WATER_PER_MM, mu_to_hu

    current, prior_image, grid, what = thorax_or_phantom(args.size)
    tags = ("INRPrior", "INRRecon", "INRDifference")
    app, views = make_app(tags)
    # As in Slicer: the planning CT is in HU; the worker converts it and writes its result in HU.
    prior_hu = mu_to_hu(prior_image, MU_WATER_PER_MM).astype(np.float32)
    prior = V.add_volume(app.scene, prior_hu, V.ijk_to_ras_from_grid(grid), "planning CT")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fraction1.h5"
        measurement = simulate_parallel(current, grid)
        measurement.attrs["mu_water_per_mm"] = MU_WATER_PER_MM
        write_measurement(measurement, path)
        session = ReconstructionSession(app.scene, lambda d: WorkerRunner(d, python=sys.executable), Path(tmp) / "job",
                                        path, prior_node=prior, method=args.method, iterations=args.iterations,
                                        device="cpu", preview_every=max(1, args.iterations // 4))
        session.start()
        preview_shot = None
        while not session.state.finished:
            session.poll()
            if preview_shot is None and session.preview_node is not None and session.state.iteration > 0:
                views["INRRecon"].set_background_volume_id(prior.GetID())
                views["INRRecon"].set_foreground_volume_id(session.preview_node.GetID())
                views["INRRecon"].set_foreground_opacity(0.5)
                preview_shot = grab(views["INRRecon"])
        if session.state.status != "done":
            raise SystemExit(f"reconstruction ended with {session.state.status}: {session.state.message}")
        recon = app.scene.GetNodeByID(session.state.output_node_id)
        views["INRRecon"].set_foreground_volume_id(None)
        shots = render_comparison(app, views, prior, recon)
    out = Path(args.out)
    written = [save_png(side_by_side([shots[t] for t in tags]), out / "compare_prior_recon_difference.png")]
    if preview_shot is not None:
        written.append(save_png(preview_shot, out / "live_preview_over_prior.png"))
    for p in written:
        print(f"wrote {p} ({what}, {args.method}, {args.iterations} iterations)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
