"""Tests of lib.core.fid: the weights policy (never downloaded, a clear error) and the Inception plumbing."""

import numpy as np
import pytest
import torch

from lib.core.fid import (
    FID_WEIGHTS_ENV,
    FID_WEIGHTS_FILE,
    FID_WEIGHTS_URL,
    FIDWeightsMissing,
    fid,
    inception_features,
)


# ------------------------------------------------------------------------------ FID


def test_fid_weights_missing_env(monkeypatch, tmp_path):
    missing = tmp_path / "nowhere" / FID_WEIGHTS_FILE
    monkeypatch.setenv(FID_WEIGHTS_ENV, str(missing))
    images = np.zeros((2, 3, 8, 8), np.float32)
    with pytest.raises(FIDWeightsMissing) as err:
        fid(images, images, dims=64)
    assert isinstance(err.value, FileNotFoundError)
    message = str(err.value)
    for part in (FID_WEIGHTS_FILE, str(missing), FID_WEIGHTS_ENV, FID_WEIGHTS_URL, "checkpoints"):
        assert part in message


def test_fid_weights_missing_argument_and_hub(monkeypatch, tmp_path):
    with pytest.raises(FIDWeightsMissing, match="weights_path"):
        inception_features(np.zeros((2, 3, 8, 8)), dims=64, weights_path=tmp_path / "x.pth")
    monkeypatch.delenv(FID_WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # torch hub folder = tmp_path/hub
    with pytest.raises(FIDWeightsMissing, match=str(tmp_path / "hub" / "checkpoints")):
        inception_features(np.zeros((2, 3, 8, 8)), dims=64)


def test_fid_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="dims"):
        fid(np.zeros((2, 3, 8, 8)), np.zeros((2, 3, 8, 8)), dims=100)
    for bad in (0, 2.5):
        with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
            fid(np.zeros((2, 3, 8, 8)), np.zeros((2, 3, 8, 8)), dims=64, batch_size=bad)
        with pytest.raises(ValueError, match="batch_size"):
            inception_features(np.zeros((2, 3, 8, 8)), dims=64, batch_size=bad)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # 2 images, 64 dims
def test_inception_plumbing_only_random_weights(monkeypatch, tmp_path):
    """PLUMBING ONLY, not an FID check: random weights stand in for the real file.

    A randomly initialised Inception (torchvision's, whose parameters have the same names
    and shapes as the FID Inception's) is saved and read back through `weights_path`;
    the features must equal those of pytorch-fid's own InceptionV3 loading the same file
    from the torch hub folder (where it looks before downloading).
    """
    from pytorch_fid import inception as pf

    torch.manual_seed(0)
    net = pf._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    for m in net.modules():  # He init keeps the activations O(1) through the depth
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    path = tmp_path / "hub" / "checkpoints" / FID_WEIGHTS_FILE
    path.parent.mkdir(parents=True)
    torch.save(net.state_dict(), path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    images = torch.rand(2, 3, 40, 40)
    reference = pf.InceptionV3([0, 3]).eval()  # blocks for 64 and 2048 dims, one forward
    with torch.no_grad():
        expected = [block.mean(dim=(2, 3)).double().numpy() for block in reference(images[:1])]
    for dims, block in ((64, 0), (2048, 1)):
        features = inception_features(images[:1], dims, device="cpu", weights_path=path)
        assert features.shape == (1, dims) and features.dtype == np.float64
        assert expected[block].max() > 0.5  # not vanished activations
        np.testing.assert_allclose(features, expected[block], rtol=1e-4, atol=1e-5)

    # uint8 N x H x W x 3 input, found in the hub folder when no path is given.
    uint8_images = (images.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    as_float = torch.from_numpy(uint8_images).permute(0, 3, 1, 2) / 255
    np.testing.assert_allclose(
        inception_features(uint8_images, dims=192, device="cpu", batch_size=1),
        inception_features(as_float, dims=192, device="cpu", weights_path=path),
        atol=1e-6,
    )
    value = fid(images, images * 0.5, dims=64, weights_path=path, device="cpu")
    assert np.isfinite(value) and value > 0


def test_fid_image_errors():
    # Images are checked before the weights are looked up.
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        inception_features(np.full((2, 3, 8, 8), 2.0), dims=64)
    with pytest.raises(ValueError, match="3 channels"):
        inception_features(np.zeros((2, 1, 8, 8)), dims=64)
    with pytest.raises(ValueError, match="at least 2 images"):
        fid(np.zeros((2, 3, 8, 8)), np.zeros((1, 3, 8, 8)), dims=64)
    with pytest.raises(ValueError, match="N x H x W x 3"):
        inception_features(np.zeros((2, 3, 8, 8), np.uint8), dims=64)
    with pytest.raises(ValueError, match="NaN or inf"):
        inception_features(np.full((2, 3, 8, 8), np.nan), dims=64)
