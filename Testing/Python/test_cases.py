"""Benchmark cases built from ../shared/data (skipped without it)."""

import numpy as np
import pytest

from INRReconLib.cases import build_cases, ct2d_case
from INRReconLib.errors import InputError
from INRReconLib.methods.metrics import image_metrics


def test_ct2d_prior_from_the_nodule_slice(shared_data):
    """prior_offset_slices=0 changes only the prior: same data, truth and ROI, a prior of the
    same anatomy (still with the changed lesion, shift, deformation and noise)."""
    standard = ct2d_case("parallel", 20, size=64)
    same = ct2d_case("parallel", 20, size=64, prior_offset_slices=0)
    assert standard.name == "ct2d_longitudinal_parallel_v20_clean_64"
    assert same.name == "ct2d_longitudinal_parallel_v20_clean_64_prior0mm"
    np.testing.assert_array_equal(same.measurement.data, standard.measurement.data)
    np.testing.assert_array_equal(same.truth, standard.truth)
    np.testing.assert_array_equal(same.roi, standard.roi)
    p_standard = image_metrics(standard.prior, standard.truth)["psnr"]
    p_same = image_metrics(same.prior, same.truth)["psnr"]
    print(f"prior PSNR: 4 mm away {p_standard:.2f}, nodule slice {p_same:.2f}")  # measured: 26.67, 29.14
    assert p_same > p_standard + 1.0


def test_ct2d_prior_volume(shared_data):
    """prior_volume: same data, truth and ROI; the prior is the changed stack, whose slice in the
    measured plane is the standard case's 4 mm away and whose slice at -4 mm is the nodule's."""
    standard = ct2d_case("parallel", 20, size=64)
    volume = ct2d_case("parallel", 20, size=64, prior_volume=True)
    assert volume.name == "ct2d_longitudinal_parallel_v20_clean_64_priorvolume"
    np.testing.assert_array_equal(volume.measurement.data, standard.measurement.data)
    np.testing.assert_array_equal(volume.roi, standard.roi)
    assert volume.prior.offsets_mm == tuple(float(o) for o in range(-18, 21, 2))
    psnr = {o: image_metrics(image[None], volume.truth)["psnr"] for o, image in zip(volume.prior.offsets_mm,
                                                                                      volume.prior.images)}
    p_plane = image_metrics(volume.prior.plane, volume.truth)["psnr"]
    p_standard = image_metrics(standard.prior, standard.truth)["psnr"]
    print(f"prior PSNR: plane {p_plane:.2f} (standard case {p_standard:.2f}), slice -4 mm {psnr[-4.0]:.2f}")
    # measured: plane 26.69 (standard case 26.67), slice -4 mm 29.41
    assert p_plane == pytest.approx(p_standard, abs=0.5)
    assert max(psnr, key=psnr.get) == -4.0 and psnr[-4.0] > p_plane + 1.0


def test_case_groups():
    specs = build_cases("ct2d-v20-prior0mm")
    assert [kw["geometry"] for _, kw in specs] == ["parallel", "fan"]
    assert all(kind == "ct2d" and kw["prior_offset_slices"] == 0 for kind, kw in specs)
    # the 2D CT standard (data README, 2026-12): the prior as a volume; the single slice is the stress case
    assert all(kw.get("prior_volume") for group in ("ct2d", "ct2d-v20") for _, kw in build_cases(group))
    assert not any(kw.get("prior_volume") for _, kw in build_cases("ct2d-v20-priorslice"))
    with pytest.raises(InputError, match="case group"):
        build_cases("ct2d-v21")
