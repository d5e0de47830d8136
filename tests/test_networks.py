import torch

from untrained.networks.skip import SkipNet


def dip_notebook_parameter_count() -> int:
    """Closed-form count of the denoising notebook's skip net ([128]*5, skip 4, 32 in, 3 out, 3×3 convs)."""
    total = 0
    for scale in range(5):
        c_in = 32 if scale == 0 else 128
        total += c_in * 4 + 4 + 2 * 4                    # skip conv 1×1 + BN
        total += c_in * 128 * 9 + 128 + 2 * 128          # strided conv + BN
        total += 128 * 128 * 9 + 128 + 2 * 128           # conv + BN
        total += 2 * (4 + 128)                           # BN after concat
        total += (4 + 128) * 128 * 9 + 128 + 2 * 128     # up conv + BN
        total += 128 * 128 + 128 + 2 * 128               # 1×1 conv + BN
    return total + 128 * 3 + 3


def test_skip_net_has_the_papers_parameter_count():
    net = SkipNet(32, 3, [128] * 5, [128] * 5, [4] * 5, pad="reflection", upsample_mode="bilinear")
    count = sum(p.numel() for p in net.parameters())
    assert count == dip_notebook_parameter_count() == 2_217_831


def test_skip_net_shapes_and_options():
    for kwargs in [dict(pad="zero", upsample_mode="nearest", downsample_mode="avg"),
                   dict(batch_norm=False, sigmoid=False, act="ELU", downsample_mode="max"),
                   dict(channels_skip=[0, 0, 4])]:
        net = SkipNet(8, 2, [8, 8, 8], [8, 8, 8], kwargs.pop("channels_skip", [2, 2, 2]), **kwargs)
        assert net(torch.rand(1, 8, 32, 24)).shape == (1, 2, 32, 24)
    signal_net = SkipNet(4, 1, [8, 8], [8, 8], [2, 2], dim=1)
    assert signal_net(torch.rand(1, 4, 64)).shape == (1, 1, 64)
    assert (SkipNet(4, 3, 8, 8, 2, num_scales=3)(torch.rand(1, 4, 16, 16)) <= 1).all()
