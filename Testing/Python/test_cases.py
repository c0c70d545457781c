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


def test_case_groups():
    specs = build_cases("ct2d-v20-prior0mm")
    assert [kw["geometry"] for _, kw in specs] == ["parallel", "fan"]
    assert all(kind == "ct2d" and kw["prior_offset_slices"] == 0 for kind, kw in specs)
    with pytest.raises(InputError, match="case group"):
        build_cases("ct2d-v21")
