import pytest
import torch

from lib.models import UNET_PRESETS, count_parameters, pick_device, unet


def test_tiny_preset_shapes():
    m = unet("tiny", 32)
    x = torch.randn(2, 3, 32, 32)
    assert m(x, torch.tensor([0, 999])).sample.shape == x.shape
    assert 1e6 < count_parameters(m) < 5e6


def test_paper_preset_matches_paper_settings():
    cfg = UNET_PRESETS["paper"]
    assert cfg.sample_size == 256 and cfg.block_out_channels == (128, 128, 256, 256, 512, 512)
    assert cfg.layers_per_block == 2 and cfg.downsample_type == "resnet"
    # attention at resolutions 32, 16, 8 of a 256 input: the last three levels
    attn = [256 // 2 ** i for i, b in enumerate(cfg.down_block_types) if b.startswith("Attn")]
    assert attn == [32, 16, 8]
    m = unet("paper")
    assert 100e6 < count_parameters(m) < 150e6


def test_errors():
    with pytest.raises(ValueError, match="preset"):
        unet("huge")
    with pytest.raises(ValueError, match="divisible"):
        unet("tiny", 36)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            pick_device("cuda")
    assert pick_device("cpu").type == "cpu"
