import json

import pytest
import torch

from milcnn.process.preprocess import NormalizationConfig
from training.model import MILCNN, ModelConfig, count_flops


def config(**kw):
    return ModelConfig(channels=("gfp", "rfp"), classes=("a", "b", "c"), **kw)


def test_config_round_trips_through_json():
    cfg = config(pooling="lse", pooling_params={"r": 2.0}, width=8, output_stride=4, context=2,
                 normalization=NormalizationConfig(low=2, high=99), multi_label=True)
    text = cfg.to_json()
    assert json.loads(text)["normalization"] == {"method": "percentile", "low": 2, "high": 99, "eps": 1e-6}
    assert ModelConfig.from_json(text) == cfg


@pytest.mark.parametrize("stride", [4, 8])
@pytest.mark.parametrize("size", [(64, 64), (100, 77), (130, 200)])
def test_any_size_from_the_minimum(stride, size):
    model = MILCNN(config(width=8, output_stride=stride)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 2, *size))
    assert out.probabilities.shape == (2, 3)
    assert out.class_maps.shape == (2, 3, -(-size[0] // stride), -(-size[1] // stride))
    assert torch.all((out.class_maps >= 0) & (out.class_maps <= 1))


def test_below_minimum_size_is_a_clear_error():
    model = MILCNN(config(width=8))
    with pytest.raises(ValueError, match="below the model's minimum of 64 px"):
        model(torch.randn(1, 2, 63, 128))


def test_bad_config_values():
    with pytest.raises(ValueError, match="unknown pooling"):
        config(pooling="median")
    with pytest.raises(ValueError, match="output_stride"):
        config(output_stride=5)


def test_flops_scale_with_pixels():
    model = MILCNN(config())
    f1, f4 = count_flops(model, 128, 128), count_flops(model, 256, 256)
    assert f4 == pytest.approx(4 * f1, rel=1e-6)


@pytest.mark.parametrize("stride,context", [(4, 1), (8, 0), (4, 2)])
def test_documented_receptive_field_matches_the_gradient(stride, context):
    from training.model import receptive_field

    cfg = config(width=4, output_stride=stride, context=context, pooling="mean", pooling_params={})
    model = MILCNN(cfg).eval()
    x = torch.rand(1, 2, 160, 160, requires_grad=True)
    maps = model(x).class_maps
    i = maps.shape[-1] // 2
    maps[0, :, i, i].sum().backward()
    cols = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 2)) > 0)
    assert int(cols.max() - cols.min() + 1) == receptive_field(cfg)
