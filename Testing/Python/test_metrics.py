"""Image metrics against hand-computed values and (when installed) scikit-image."""

import numpy as np
import pytest

from INRReconLib.methods.metrics import image_metrics, nrmse, psnr, ssim, ssim_map


def test_psnr_known_values():
    ref = np.zeros((10, 10))
    ref[0, 0] = 2.0  # data range 2
    x = ref + 0.1  # MSE 0.01 -> PSNR = 10 log10(4 / 0.01) = 26.0206
    assert psnr(x, ref) == pytest.approx(10 * np.log10(400.0))
    assert psnr(x, ref, data_range=1.0) == pytest.approx(20.0)
    assert psnr(ref, ref) == float("inf")
    mask = np.zeros_like(ref, bool)
    mask[5:, 5:] = True
    y = ref.copy()
    y[mask] += 0.2  # only inside the mask: MSE there 0.04
    assert psnr(y, ref, mask=mask) == pytest.approx(10 * np.log10(4 / 0.04))
    assert psnr(y, ref) == pytest.approx(10 * np.log10(4 / 0.01))  # 25 of 100 pixels wrong by 0.2


def test_nrmse_known_values():
    ref = np.array([[3.0, 4.0]])
    assert nrmse(ref * 1.1, ref) == pytest.approx(0.1)
    assert nrmse(np.array([[3.0, 0.0]]), ref, mask=np.array([[True, False]])) == pytest.approx(0.0)


def test_ssim_properties():
    rng = np.random.default_rng(0)
    ref = rng.random((40, 50))
    assert ssim(ref, ref) == pytest.approx(1.0)
    assert ssim(ref * 0 + ref.mean(), ref) < 0.05  # no structure left
    noisy = ref + rng.normal(0, 0.1, ref.shape)
    noisier = ref + rng.normal(0, 0.3, ref.shape)
    assert 1.0 > ssim(noisy, ref) > ssim(noisier, ref) > 0.0
    # constant images: (c1)(c2)/(c1)(c2) -> 1 in the luminance-equal case
    assert ssim(np.ones((20, 20)), np.ones((20, 20)), data_range=1.0) == pytest.approx(1.0)


def test_ssim_3d_is_slice_average_and_masked_mean():
    rng = np.random.default_rng(1)
    ref = rng.random((3, 30, 30))
    x = ref + rng.normal(0, 0.2, ref.shape)
    dr = ref.max() - ref.min()
    per_slice = [ssim(x[k], ref[k], data_range=dr) for k in range(3)]
    assert ssim(x, ref) == pytest.approx(np.mean(per_slice))
    mask = np.zeros(ref.shape, bool)
    mask[:, 10:20, 10:20] = True
    assert ssim(x, ref, mask=mask) == pytest.approx(ssim_map(x, ref)[mask].mean())


def test_complex_compared_by_magnitude():
    ref = np.random.default_rng(2).random((20, 20))
    assert psnr(ref * np.exp(1j * 0.7), ref) > 250  # equal up to rounding


def test_image_metrics_with_roi():
    rng = np.random.default_rng(3)
    ref = rng.random((32, 32))
    x = ref.copy()
    roi = np.zeros_like(ref, bool)
    roi[8:16, 8:16] = True
    x[roi] += 0.1
    m = image_metrics(x, ref, roi=roi)
    assert set(m) == {"psnr", "ssim", "nrmse", "roi_psnr", "roi_ssim", "roi_nrmse"}
    dr = ref.max() - ref.min()
    assert m["roi_psnr"] == pytest.approx(10 * np.log10(dr ** 2 / 0.01))
    assert m["psnr"] == pytest.approx(10 * np.log10(dr ** 2 / (0.01 * 64 / 1024)))
    assert m["roi_ssim"] < m["ssim"] < 1.0
    assert "roi_psnr" not in image_metrics(x, ref)


def test_errors():
    with pytest.raises(ValueError, match="shape"):
        psnr(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="data range"):
        psnr(np.zeros((3, 3)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="empty"):
        psnr(np.zeros((3, 3)), np.eye(3), mask=np.zeros((3, 3), bool))


def test_against_skimage():
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(4)
    ref = rng.random((48, 56)).cumsum(0)
    x = ref + rng.normal(0, 2.0, ref.shape)
    dr = ref.max() - ref.min()
    assert psnr(x, ref) == pytest.approx(metrics.peak_signal_noise_ratio(ref, x, data_range=dr), rel=1e-10)
    assert nrmse(x, ref) == pytest.approx(metrics.normalized_root_mse(ref, x), rel=1e-10)
    expected = metrics.structural_similarity(x, ref, data_range=dr, gaussian_weights=True, sigma=1.5,
                                             use_sample_covariance=False)
    assert ssim(x, ref) == pytest.approx(expected, rel=1e-10)


def test_scale_to_reference_removes_the_mr_scale():
    from INRReconLib.methods.metrics import scale_to_reference

    rng = np.random.default_rng(1)
    ref = rng.random((16, 16))
    np.testing.assert_allclose(scale_to_reference(3.5 * ref * np.exp(1j * 0.3), ref), ref, rtol=1e-6)
    noisy = ref + 0.1 * rng.standard_normal(ref.shape)
    scaled = scale_to_reference(10 * noisy, ref)
    # the least-squares scale: no other scale of the same image is closer to the reference
    for s in (0.95, 1.05):
        assert np.sum((scaled - ref) ** 2) < np.sum((s * scaled - ref) ** 2)


def test_roc_auc_known_values():
    from INRReconLib.methods.metrics import roc_auc

    mask = np.array([0, 0, 1, 1], bool)
    assert roc_auc([0.1, 0.2, 0.8, 0.9], mask) == 1.0
    assert roc_auc([0.9, 0.8, 0.2, 0.1], mask) == 0.0
    assert roc_auc([0.5, 0.5, 0.5, 0.5], mask) == 0.5  # ties count half
    assert roc_auc([0.1, 0.7, 0.5, 0.9], mask) == 0.75
    assert np.isnan(roc_auc([1, 2], np.array([True, True])))


def test_dice_known_values():
    from INRReconLib.methods.metrics import dice

    mask = np.array([0, 1, 1, 0], bool)
    assert dice(mask, mask) == 1.0
    assert dice(~mask, mask) == 0.0
    assert dice([1, 1, 0, 0], mask) == 0.5  # 2·1 / (2 + 2)
    assert dice([0, 1, 0, 0], mask) == pytest.approx(2 / 3)
    assert np.isnan(dice([0, 0], [0, 0]))


def test_the_change_map_ignores_the_mr_scale():
    from INRReconLib.methods.change import CHANGE_THRESHOLD, change_map

    rng = np.random.default_rng(2)
    prior = 0.5 + 0.01 * rng.standard_normal((1, 32, 32))
    image = prior.copy()
    image[0, 10:16, 10:16] += 0.3  # the change
    mr = change_map(7.0 * image * np.exp(0.4j), prior, (1, 32, 32))  # another scale and phase
    assert mr[0, 12, 12] > CHANGE_THRESHOLD and np.median(mr) < 1.0
