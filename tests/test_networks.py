import torch

from untrained.networks.skip import SkipNet


def dip_notebook_parameter_count() -> int:
    """Closed-form count of the denoising notebook's skip net ([128]*5, skip 4, 32 in, 3 out, 3×3 convs)."""
    total = 0
    for scale in range(5):
        c_in = 32 if scale == 0 else 128
        total += c_in * 4 + 4 + 2 * 4  # skip conv 1×1 + BN
        total += c_in * 128 * 9 + 128 + 2 * 128  # strided conv + BN
        total += 128 * 128 * 9 + 128 + 2 * 128  # conv + BN
        total += 2 * (4 + 128)  # BN after concat
        total += (4 + 128) * 128 * 9 + 128 + 2 * 128  # up conv + BN
        total += 128 * 128 + 128 + 2 * 128  # 1×1 conv + BN
    return total + 128 * 3 + 3


def test_skip_net_has_the_papers_parameter_count():
    net = SkipNet(32, 3, [128] * 5, [128] * 5, [4] * 5, pad="reflection", upsample_mode="bilinear")
    count = sum(p.numel() for p in net.parameters())
    assert count == dip_notebook_parameter_count() == 2_217_831


def test_skip_net_shapes_and_options():
    for kwargs in [
        dict(pad="zero", upsample_mode="nearest", downsample_mode="avg"),
        dict(batch_norm=False, sigmoid=False, act="ELU", downsample_mode="max"),
        dict(channels_skip=[0, 0, 4]),
    ]:
        net = SkipNet(8, 2, [8, 8, 8], [8, 8, 8], kwargs.pop("channels_skip", [2, 2, 2]), **kwargs)
        assert net(torch.rand(1, 8, 32, 24)).shape == (1, 2, 32, 24)
    signal_net = SkipNet(4, 1, [8, 8], [8, 8], [2, 2], dim=1)
    assert signal_net(torch.rand(1, 4, 64)).shape == (1, 1, 64)
    assert (SkipNet(4, 3, 8, 8, 2, num_scales=3)(torch.rand(1, 4, 16, 16)) <= 1).all()


def test_channels_last_skip_net_keeps_gradients_dense_and_equal_to_nchw():
    """In channels-last, the gradient torch.cat hands the upsampling is made dense channels-last (else its
    backward falls back to the slow NCHW kernel); the gradients are those of the NCHW network."""
    torch.manual_seed(0)
    net = SkipNet(8, 3, [16] * 3, [16] * 3, [4] * 3)
    z = torch.rand(1, 8, 32, 32)
    net(z).square().sum().backward()
    nchw_grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()

    layouts = []  # of the gradient each upsampling's backward receives (a node pre-hook runs after tensor hooks)

    def watch_backward(_module, _input, output):
        output.grad_fn.register_prehook(
            lambda grads: layouts.append(grads[0].is_contiguous(memory_format=torch.channels_last))
        )

    for module in net.modules():
        if isinstance(module, torch.nn.Upsample):
            module.register_forward_hook(watch_backward)
    net.to(memory_format=torch.channels_last)
    net(z.contiguous(memory_format=torch.channels_last)).square().sum().backward()
    assert layouts == [True] * 3
    for nchw, channels_last in zip(nchw_grads, (p.grad for p in net.parameters()), strict=True):
        # biases before a BatchNorm get gradients that are rounding noise, so the tolerance follows the largest
        torch.testing.assert_close(channels_last, nchw, rtol=1e-4, atol=1e-4 * max(g.abs().max() for g in nchw_grads))
