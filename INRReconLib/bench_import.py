"""`inrrecon bench --cases import:cbct`: cone-beam scans written the way RTK writes them (its
geometry XML, projections by its Joseph projector) on the real thorax of ../shared/data, imported
with `inrrecon import rtk`, against RTK's own FDK and against the same scan simulated directly in
our format. Needs itk-rtk (the test extra).

Rows: a centred full scan, a half-fan (offset detector, 360°) and a short scan (220°), each
with every projection and with every 9th (sparse view); per row the import's seconds, FDK's
seconds (ours and RTK's, with its displaced-detector and Parker filters), our FDK against RTK's
(relative RMS inside the field of view) and the PSNR of FDK from the imported files and from the
direct path (cone_geometry + our projector). `--methods tv` adds TV (auto) on the sparse rows.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SID, SDD, PITCH, ROWS = 1000.0, 1500.0, 2.0, 112
# (name, columns, RTK projection offset x (mm), arc (deg), views)
SCANS = (("full", 384, 0.0, 360.0, 180), ("half-fan", 256, -160.0, 360.0, 180), ("short", 384, 0.0, 220.0, 120))
SPARSE_EVERY = 9
FOV_RADIUS_MM = 230.0


def thorax_volume():
    """The real thorax (../shared/data), 2× pooled in-plane (3.9 mm), 64 slices of 2 mm around the
    nodule, 4 slices of air above and below: μ [z, y, x] (L, P, S), spacing (x, y, z)."""
    from .cases import CT_VOLUME, NODULE_SLICE_FULLRES, require_data
    from .io.volume import hu_to_mu, read_volume

    hu, grid = read_volume(require_data() / CT_VOLUME)
    z0 = int(np.clip(55 + NODULE_SLICE_FULLRES - 32, 0, hu.shape[0] - 64))
    hu = hu[z0:z0 + 64]
    nz, ny, nx = hu.shape
    mu = np.clip(hu_to_mu(hu), 0, None).reshape(nz, ny // 2, 2, nx // 2, 2).mean(axis=(2, 4)).astype(np.float32)
    return np.pad(mu, ((4, 4), (0, 0), (0, 0))), (grid.spacing[0] * 2, grid.spacing[1] * 2, grid.spacing[2])


# ------------------------------------------------------------------------ the scan, RTK's way
def rtk_volume(mu, spacing):
    """Our [z, y, x] (L, P, S) volume as an RTK image for HFS: X = L, Y = S, Z = −P (io/cbct.py),
    centred at the isocentre."""
    import itk

    vol = np.ascontiguousarray(np.flip(mu.transpose(1, 0, 2), axis=0))
    image = itk.image_from_array(vol)
    sp = (spacing[0], spacing[2], spacing[1])
    image.SetSpacing(sp)
    image.SetOrigin([-(n - 1) / 2 * s for n, s in zip(vol.shape[::-1], sp)])
    return image


def from_rtk_volume(arr):
    """RTK's [Z, Y, X] array (HFS) back to our [z, y, x]."""
    return np.ascontiguousarray(np.flip(arr, axis=0).transpose(1, 0, 2))


def rtk_geometry(angles_deg, offset_x=0.0, sid=SID, sdd=SDD, out_of_plane=0.0):
    """An RTK geometry: gantry angles (deg), projection offset x (mm), out-of-plane angle (deg).
    `sid` may be one value per view (a non-circular orbit); the detector then stays
    sdd − mean(sid) from the isocentre."""
    from .io.cbct import rtk

    g = rtk().ThreeDCircularProjectionGeometry.New()
    iso_to_detector = sdd - float(np.mean(sid))
    for a, s in zip(angles_deg, np.broadcast_to(sid, len(angles_deg))):
        g.AddProjection(float(s), float(s) + iso_to_detector, float(a), float(offset_x), 0.0, float(out_of_plane),
                        0.0)
    return g


def rtk_project(volume, geometry, rows, cols, pitch):
    """RTK's Joseph projections of `volume`, as an image of its own (not tied to the filter)."""
    import itk

    from .io.cbct import rtk

    image_type = itk.Image[itk.F, 3]
    n = len(geometry.GetGantryAngles())
    empty = itk.image_from_array(np.zeros((n, rows, cols), np.float32))
    empty.SetSpacing([pitch, pitch, 1.0])
    empty.SetOrigin([-(cols - 1) / 2 * pitch, -(rows - 1) / 2 * pitch, 0.0])
    fp = rtk().JosephForwardProjectionImageFilter[image_type, image_type].New()
    fp.SetInput(0, empty)
    fp.SetInput(1, volume)
    fp.SetGeometry(geometry)
    fp.Update()
    out = itk.image_from_array(itk.array_from_image(fp.GetOutput()).copy())
    out.CopyInformation(empty)
    return out


def rtk_fdk(projections, geometry, volume):
    """RTK's FDK as rtkfdk runs it: displaced-detector and Parker filters, then FDK; our array order."""
    import itk

    from .io.cbct import rtk

    image_type = itk.Image[itk.F, 3]
    source = itk.image_from_array(itk.array_from_image(projections).copy())
    source.CopyInformation(projections)
    filters = [rtk().DisplacedDetectorImageFilter[image_type].New(), rtk().ParkerShortScanImageFilter[image_type].New()]
    for f in filters:  # the list keeps each filter alive while the FDK pulls from its output
        f.SetInput(source)
        f.SetGeometry(geometry)
        f.Update()
        source = f.GetOutput()
    zero = itk.image_from_array(np.zeros(itk.array_from_image(volume).shape, np.float32))
    zero.CopyInformation(volume)
    fdk = rtk().FDKConeBeamReconstructionFilter[image_type].New()
    fdk.SetInput(0, zero)
    fdk.SetInput(1, source)
    fdk.SetGeometry(geometry)
    fdk.Update()
    return from_rtk_volume(itk.array_from_image(fdk.GetOutput()).copy())


def write_rtk_scan(folder: Path, geometry, projections):
    """geometry.xml (RTK's writer) and projections.mha in `folder`."""
    import itk

    from .io.cbct import rtk

    folder.mkdir(parents=True, exist_ok=True)
    writer = rtk().ThreeDCircularProjectionGeometryXMLFileWriter.New()
    writer.SetFilename(str(folder / "geometry.xml"))
    writer.SetObject(geometry)
    writer.WriteFile()
    itk.imwrite(projections, str(folder / "projections.mha"))
    return folder / "geometry.xml", folder / "projections.mha"


# ------------------------------------------------------------------------------------ the rows
def fov_mask(shape, spacing, radius_mm=FOV_RADIUS_MM, end_slices=8):
    """Voxels within radius_mm of the axis, `end_slices` away from the ends (the cone's incomplete slices)."""
    nz, ny, nx = shape
    yy, xx = np.mgrid[:ny, :nx]
    r = np.hypot((xx - (nx - 1) / 2) * spacing[0], (yy - (ny - 1) / 2) * spacing[1])
    z = np.arange(nz)[:, None, None]
    return np.broadcast_to(r < radius_mm, shape) & (z >= end_slices) & (z < nz - end_slices)


def import_rows(group: str, methods=None, device="cpu"):
    import torch

    from .io.cbct import read_rtk
    from .io.measurement import Measurement
    from .methods.classical_ct import fbp_image
    from .methods.metrics import psnr, ssim
    from .methods.registry import reconstruct
    from .physics.ct_geometry import cone_geometry
    from .physics.ct_projector import CTProjector

    if group != "cbct":
        raise ValueError(f"unknown import group {group!r} (import:cbct)")
    mu, sp = thorax_volume()
    nz, ny, nx = mu.shape
    inside = fov_mask(mu.shape, sp)
    peak = float(mu.max())
    volume = rtk_volume(mu, sp)
    rows = []
    for name, cols, offset, arc, n_views in SCANS:
        angles = np.linspace(0, arc, n_views, endpoint=arc < 360)
        g = rtk_geometry(angles, offset_x=offset)
        projections = rtk_project(volume, g, ROWS, cols, PITCH)
        t0 = time.perf_counter()
        reference = rtk_fdk(projections, g, volume)
        rtk_seconds = time.perf_counter() - t0
        with tempfile.TemporaryDirectory(prefix="inrrecon-bench-") as d:
            xml, mha = write_rtk_scan(Path(d), g, projections)
            for every in (1, SPARSE_EVERY):
                print(f"bench: import:cbct {name} every {every} ...", file=sys.stderr, flush=True)
                t0 = time.perf_counter()
                imported = read_rtk([xml, mha], size=(nx, ny, nz), spacing=sp, every=every)
                import_seconds = time.perf_counter() - t0
                keep = np.arange(0, n_views, every)
                direct_geometry = cone_geometry(np.radians(angles[keep] - 180.0), cols, PITCH, SID, SDD - SID,
                                                n_rows=ROWS, row_spacing_mm=PITCH, detector_offset_mm=-offset)
                with torch.no_grad():
                    direct_data = CTProjector(direct_geometry, imported.grid)(torch.from_numpy(mu)).numpy()
                direct = Measurement("CT", direct_data, imported.grid, direct_geometry)
                t0 = time.perf_counter()
                with torch.no_grad():
                    ours, _ = fbp_image(CTProjector(imported.geometry, imported.grid), torch.from_numpy(imported.data))
                ours = ours.numpy()
                fdk_seconds = time.perf_counter() - t0
                with torch.no_grad():
                    direct_fdk = fbp_image(CTProjector(direct.geometry, direct.grid), torch.from_numpy(direct.data))[0]
                row = {"scan": name, "views": len(keep), "import_s": import_seconds, "fdk_s": fdk_seconds,
                       "psnr_import": psnr(ours[inside], mu[inside], data_range=peak),
                       "psnr_direct": psnr(direct_fdk.numpy()[inside], mu[inside], data_range=peak),
                       "ssim_import": ssim(ours, mu, data_range=peak, mask=inside)}
                if every == 1:
                    row["rtk_fdk_s"] = rtk_seconds
                    a, b = ours[inside].astype(np.float64), reference[inside].astype(np.float64)
                    row["vs_rtk_rel_rms"] = float(np.sqrt(np.mean((a - b) ** 2) / np.mean(b ** 2)))
                if every > 1 and methods and "tv" in methods:
                    for label, m in (("import", imported), ("direct", direct)):
                        t0 = time.perf_counter()
                        res = reconstruct(m, "tv", device=device)
                        row[f"tv_s_{label}"] = time.perf_counter() - t0
                        row[f"tv_psnr_{label}"] = psnr(res.image[inside], mu[inside], data_range=peak)
                rows.append(row)
    return rows


def print_import_table(rows, stream=sys.stdout):
    """One line per scan and view count."""
    print(f"{'scan':9s} {'views':>5s} {'import s':>8s} {'FDK s':>6s} {'RTK s':>6s} {'vs RTK':>7s} "
          f"{'PSNR imp':>8s} {'PSNR dir':>8s} {'Δ dB':>6s} {'TV imp':>7s} {'TV dir':>7s}", file=stream)
    for r in rows:
        rtk_s = f"{r['rtk_fdk_s']:6.1f}" if "rtk_fdk_s" in r else f"{'':6s}"
        vs = f"{100 * r['vs_rtk_rel_rms']:6.2f}%" if "vs_rtk_rel_rms" in r else f"{'':7s}"
        tv = (f"{r['tv_psnr_import']:7.2f} {r['tv_psnr_direct']:7.2f}" if "tv_psnr_import" in r else "")
        print(f"{r['scan']:9s} {r['views']:5d} {r['import_s']:8.2f} {r['fdk_s']:6.1f} {rtk_s} {vs} "
              f"{r['psnr_import']:8.2f} {r['psnr_direct']:8.2f} {r['psnr_import'] - r['psnr_direct']:+6.2f} {tv}",
              file=stream)
