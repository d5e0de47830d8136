"""TV-DIP, Self-Guided DIP, aSeqDIP and the ES-WMV / ES-EMV stopping rules: their defining mechanisms."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import compose_config
from untrained.callbacks.early_stopping import ExponentialVarianceStopping, WindowedVarianceStopping
from untrained.methods.aseqdip import data_consistency
from untrained.operators.mri import MultiCoilMRI, fft2c, ifft2c
from untrained.problem import InverseProblem
from untrained.regularizers import total_variation
from untrained.run import build_module
from untrained.train import train


# Total variation -------------------------------------------------------------------------------
def test_total_variation_of_known_images():
    step = torch.zeros(1, 1, 4, 5)
    step[..., 2:] = 1.0  # a unit jump between columns 1 and 2, on 4 rows
    assert total_variation(step, "anisotropic") == pytest.approx(4.0)
    assert total_variation(step, "isotropic", eps=0.0) == pytest.approx(4.0)
    assert total_variation(step, "anisotropic", reduction="mean") == pytest.approx(4.0 / 20)
    corner = torch.zeros(1, 1, 3, 3)
    corner[..., 0, 0] = 1.0  # both differences leave the same pixel: |(1, 1)| = sqrt(2) vs 1 + 1
    assert total_variation(corner, "anisotropic") == pytest.approx(2.0)
    assert total_variation(corner, "isotropic", eps=0.0) == pytest.approx(2**0.5)
    flat = torch.full((1, 2, 6, 6), 0.3, requires_grad=True)
    total_variation(flat, "isotropic").backward()
    assert torch.isfinite(flat.grad).all() and flat.grad.abs().max() == 0
    signal = torch.tensor([[[0.0, 1.0, 3.0]]])  # 1D signals: TV along the one axis
    assert total_variation(signal) == pytest.approx(3.0)


def test_tv_lowers_the_tv_of_the_output_against_vanilla(make_cfg, tmp_path):
    steps = ["trainer.max_steps=40"]
    train(make_cfg(steps, subdir="vanilla"))
    train(make_cfg(steps + ["method=tv", "method.tv_weight=0.5"], subdir="tv"))
    tv = {
        name: float(total_variation(torch.from_numpy(np.load(tmp_path / name / "final.npy"))[None]))
        for name in ("vanilla", "tv")
    }
    assert tv["tv"] < 0.8 * tv["vanilla"]


# aSeqDIP ---------------------------------------------------------------------------------------
def test_aseqdip_replaces_z_after_every_block_and_adds_the_autoencoding_term(make_cfg):
    module = build_module(make_cfg(["method=aseqdip", "method.inner_steps=3", "method.ae_weight=0.5"]))
    method, network, problem = module.method, module.network, module.problem
    assert torch.equal(method.z, problem.init)  # z₀ = the noisy image
    optimizer = method.configure_optimizer(network)
    for step in range(7):
        z_before = method.z.clone()
        out = method.optimization_step(network, problem, step, optimizer, lambda loss: loss.backward())
        expected = out.logs["data_loss"] + 0.5 * ((out.output.detach() - z_before) ** 2).mean()
        assert out.logs["autoencoding"] > 0 and out.loss.detach() == pytest.approx(float(expected), rel=1e-5)
        method.after_step(network, problem, step, out)
        if step in (2, 5):  # the end of a block: z ← f_θ(z) of the block's last step
            assert torch.equal(method.z, out.output.detach())
        else:
            assert torch.equal(method.z, z_before)


@pytest.mark.parametrize("coils", [1, 3])
def test_aseqdip_data_consistency_matches_the_reference_kspace_replacement(coils):
    """z ← S^H F^H [(1 − M) F S x + M y] (Aseq_DIP_MRI.py) for coil maps with Σ|S_c|² = 1."""
    generator = torch.Generator().manual_seed(0)
    maps = torch.randn(coils, 8, 8, dtype=torch.complex64, generator=generator)
    maps = maps / torch.linalg.vector_norm(maps, dim=0, keepdim=True)
    mask = (torch.rand(8, 8, generator=generator) < 0.4).float()
    operator = MultiCoilMRI(maps, mask)
    problem = InverseProblem(
        "mri",
        operator,
        operator(torch.randn(1, 8, 8, dtype=torch.complex64, generator=generator)),
        (2, 8, 8),
        to_domain=lambda x: torch.complex(x[:, 0], x[:, 1]),
        from_domain=lambda x: torch.stack([x.real, x.imag], dim=1),
    )
    guess = torch.randn(1, 2, 8, 8, generator=generator)
    corrected = data_consistency(problem, guess)
    kspace = fft2c(maps * problem.to_domain(guess)[:, None])
    replaced = (1 - mask) * kspace + mask * problem.y
    expected = torch.sum(maps.conj() * ifft2c(replaced), dim=1)
    assert torch.allclose(problem.to_domain(corrected), expected, atol=1e-5)
    if coils == 1:  # one coil: the measured samples are reproduced exactly
        assert torch.allclose(operator(problem.to_domain(corrected)), problem.y, atol=1e-5)


# Self-Guided DIP -------------------------------------------------------------------------------
def test_self_guided_updates_z_and_averages_over_perturbations(make_cfg):
    module = build_module(make_cfg(["method=self_guided", "method.num_perturbations=3", "method.perturbation_std=0.1"]))
    method, network, problem = module.method, module.network, module.problem
    assert isinstance(method.z, torch.nn.Parameter) and torch.equal(method.z.detach(), problem.init)
    optimizer = method.configure_optimizer(network)
    assert [g["lr"] for g in optimizer.param_groups] == [3e-4, 0.1]  # θ and z

    torch.manual_seed(5)
    out = method.training_loss(network, problem, 0)
    torch.manual_seed(5)
    perturbations = method.perturbations()
    assert perturbations.shape[0] == 3 and perturbations.std() == pytest.approx(0.1, rel=0.1)
    outputs = network(method.z + perturbations)
    assert torch.allclose(out.output, outputs.mean(0, keepdim=True), atol=1e-6)
    assert not torch.allclose(outputs[0], outputs[1])  # the perturbations reach the output
    expected = ((out.output - problem.y) ** 2).mean() + 0.1 * ((out.output - method.z) ** 2).mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)

    z_before = method.z.detach().clone()
    out = method.optimization_step(network, problem, 0, optimizer, lambda loss: loss.backward())
    assert not torch.equal(method.z.detach(), z_before)
    assert torch.equal(method.after_step(network, problem, 0, out), out.output.detach())  # the estimate is the average


# Early stopping --------------------------------------------------------------------------------
def synthetic_sequence(steps: int = 120, turn: int = 50) -> torch.Tensor:
    """Iterates oscillating around a fixed image with an amplitude that shrinks until ``turn``, then grows."""
    generator = torch.Generator().manual_seed(0)
    base, direction = torch.rand(1, 3, 8, 8, generator=generator), torch.randn(1, 3, 8, 8, generator=generator)
    t = torch.arange(steps, dtype=torch.float32)
    amplitude = 0.01 * (1 + (t - turn).abs()) * (1 + 0.3 * torch.sin(t))
    sign = torch.where(torch.arange(steps) % 2 == 0, 1.0, -1.0)
    return base + (sign * amplitude)[:, None, None, None, None] * direction


def brute_force_wmv(sequence: torch.Tensor, window: int) -> dict[int, float]:
    flat = sequence.reshape(len(sequence), -1).double()
    return {
        t: float(((flat[t - window + 1 : t + 1] - flat[t - window + 1 : t + 1].mean(0)) ** 2).mean())
        for t in range(window - 1, len(flat))
    }


def brute_force_emv(sequence: torch.Tensor, alpha: float, start: int) -> dict[int, float]:
    flat = sequence.reshape(len(sequence), -1).double()
    mean, variance, result = flat[0].clone(), 0.0, {}
    for t in range(1, len(flat)):
        delta = flat[t] - mean
        mean = mean + alpha * delta
        variance = (1 - alpha) * (variance + alpha * float((delta**2).mean()))
        if t > start:
            result[t] = variance
    return result


@pytest.mark.parametrize("rule", ["wmv", "emv"])
def test_variance_rule_stops_and_returns_the_variance_minimum(rule):
    sequence, patience = synthetic_sequence(), 15
    if rule == "wmv":
        callback, reference = WindowedVarianceStopping(window=7, patience=patience), brute_force_wmv(sequence, 7)
    else:
        callback = ExponentialVarianceStopping(alpha=0.1, start=10, patience=patience)
        reference = brute_force_emv(sequence, 0.1, 10)
    values = {}
    for step, image in enumerate(sequence):
        value = callback.observe(image, step)
        if value is not None:
            values[step] = float(value)
    assert values.keys() == reference.keys()
    assert np.allclose(list(values.values()), list(reference.values()), rtol=1e-6, atol=1e-12)
    minimum = min(reference, key=reference.get)
    assert 50 <= minimum <= 70  # the minimum follows (the EMV lags) the turning point of the amplitude
    state = callback.state
    assert int(state["best_step"]) == minimum and bool(state["stopped"])
    assert int(state["stop_step"]) == minimum + patience
    assert torch.equal(state["best_image"], sequence[minimum])


def test_a_rule_with_average_hands_over_the_running_average_at_its_chosen_step():
    sequence, alpha = synthetic_sequence(), 0.1
    callback = WindowedVarianceStopping(window=7, patience=15, average=alpha)
    average = sequence[0].clone()
    averages = []
    for step, image in enumerate(sequence):
        average = average + alpha * (image - average)
        averages.append(average)
        callback.observe(image, step)
    chosen = int(callback.state["best_step"])
    assert chosen == min(brute_force_wmv(sequence, 7).items(), key=lambda kv: kv[1])[0]  # the same step
    assert torch.allclose(callback.state["best_image"], averages[chosen], atol=1e-6)
    assert not torch.allclose(callback.state["best_image"], sequence[chosen])


def test_es_wmv_callback_stops_a_real_run_and_reports(make_cfg, tmp_path):
    cfg = make_cfg(["trainer.max_steps=300", "module.log_every=10"])
    cfg.callbacks = compose_callbacks("es_wmv", window=10, patience=20, check_every=1)
    metrics = train(cfg)
    assert metrics["es_stopped"] and metrics["steps"] == metrics["es_stop_step"] + 1 < 300
    assert metrics["es_stop_step"] == metrics["es_step"] + 20
    assert metrics["es_gap"] == pytest.approx(metrics["best_psnr"] - metrics["es_psnr"]) and metrics["es_gap"] >= 0
    run = tmp_path / "run"
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["es_step"] == metrics["es_step"]
    assert (run / "es.png").is_file() and np.load(run / "es.npy").shape == (3, 32, 32)
    # the run hands over the rule's choice
    assert saved["reconstruction"] == "es" and saved["reconstruction_psnr"] == saved["es_psnr"]
    assert np.array_equal(np.load(run / "reconstruction.npy"), np.load(run / "es.npy"))


def test_es_wmv_with_fewer_steps_than_its_window_reports_no_detection(make_cfg, tmp_path):
    cfg = make_cfg(["trainer.max_steps=8"])
    cfg.callbacks = compose_callbacks("es_wmv")
    metrics = train(cfg)
    assert metrics["status"] == "completed" and metrics["es_stopped"] is False and "es_step" not in metrics
    assert not (tmp_path / "run" / "es.png").exists() and (tmp_path / "run" / "psnr_curve.png").is_file()
    assert metrics["reconstruction"] == "final" and metrics["reconstruction_psnr"] == metrics["final_psnr"]
    assert np.array_equal(np.load(tmp_path / "run" / "reconstruction.npy"), np.load(tmp_path / "run" / "final.npy"))


@pytest.mark.parametrize("watch", ["output", "estimate"])
def test_es_rules_watch_the_raw_output_when_the_method_averages_its_outputs(make_cfg, watch):
    """With DIP's exponential output averaging (exp_weight > 0) the rules look at, and return, the raw network output
    of each step (as the ES-DIP notebooks do), not the averaged estimate, unless told ``watch=estimate``."""
    from untrained.callbacks.base import StepCallback
    from untrained.run import assemble, fit

    class Record(StepCallback):
        def __init__(self):
            self.outputs, self.estimates = {}, {}

        def on_step_end(self, trainer, module, step):
            self.outputs[step], self.estimates[step] = module.output.clone(), module.estimate.clone()

    rules = [
        WindowedVarianceStopping(window=5, patience=1000, stop_training=False, prefix="wmv", watch=watch),
        ExponentialVarianceStopping(start=3, patience=1000, stop_training=False, prefix="emv", watch=watch),
    ]
    record = Record()
    cfg = make_cfg(["trainer.max_steps=30", "method.exp_weight=0.9", "callbacks=none", "module.log_every=10"])
    fit(assemble(cfg, extra_callbacks=[*rules, record], logger=False))
    for rule in rules:
        step = int(rule.state["best_step"])
        chosen = rule.state["best_image"]
        watched, other = (record.outputs, record.estimates) if watch == "output" else (record.estimates, record.outputs)
        assert torch.equal(chosen, watched[step])
        assert not torch.allclose(chosen, other[step], atol=1e-4)  # averaging changes the image: a real distinction


def compose_callbacks(name: str, **early_stopping):
    """Only the early-stopping callback of ``callbacks=<name>`` (no progress bar), with some options changed."""
    callbacks = compose_config([f"callbacks={name}"]).callbacks
    return OmegaConf.create({"early_stopping": {**OmegaConf.to_container(callbacks.early_stopping), **early_stopping}})


# End to end ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides,steps",
    [
        (["method=tv", "method.tv_kind=isotropic"], 60),
        (["method=self_guided", "method.lr=0.01", "method.num_perturbations=2"], 60),
        (["method=aseqdip", "method.lr=0.01"], 60),
    ],
)
def test_methods_denoise_end_to_end(make_cfg, tmp_path, overrides, steps):
    cfg = make_cfg(overrides + [f"trainer.max_steps={steps}"])
    cfg.callbacks = compose_callbacks("es_emv", start=5)
    metrics = train(cfg)
    assert metrics["status"] == "completed" and metrics["steps"] == steps
    assert metrics["es_step"] is not None and "es_psnr" in metrics
    if cfg.method.name == "aseqdip":  # its first blocks replace the noisy input by the untrained output: slower start
        first_psnr = json.loads((tmp_path / "run" / "history.json").read_text())["psnr"][0]
        assert metrics["best_psnr"] > first_psnr + 3.0
    else:
        assert metrics["best_psnr"] > metrics["baseline_noisy_psnr"] + 1.0


SMALL_TASKS = {
    "mri": ["task=mri", "task.size=32", "task.coils=4"],
    "ct": ["task=ct", "task.size=32", "task.views=12", "task.tv_max_iterations=20"],
}


@pytest.mark.parametrize("task", sorted(SMALL_TASKS))
@pytest.mark.parametrize(
    "overrides",
    [
        ["method=tv"],
        ["method=self_guided", "method.num_perturbations=2"],
        ["method=aseqdip", "method.inner_steps=4"],
    ],
)
def test_methods_run_on_mri_and_ct(make_cfg, task, overrides):
    cfg = make_cfg(overrides + SMALL_TASKS[task] + ["trainer.max_steps=12"])
    module = build_module(cfg)
    if cfg.method.name == "aseqdip":
        assert module.method.use_data_consistency == (task == "mri")  # only the MRI operator has a sampling mask
        assert cfg.method.loss == "norm" and cfg.method.inner_steps == 4  # conf/method_task/aseqdip_<task>.yaml
    metrics = train(cfg)
    assert metrics["status"] == "completed" and metrics["steps"] == 12
    assert np.isfinite(metrics["final_psnr"]) and np.isfinite(metrics["final_loss"])


def test_es_wmv_state_survives_a_checkpoint_resume(make_cfg, tmp_path):
    """Preempted at step 25 and resumed, ES-WMV detects the same step as an uninterrupted run."""
    import signal

    from omegaconf import open_dict

    from untrained.callbacks.checkpoint import RunInterrupted

    def run(subdir: str, preempt: bool) -> dict:
        cfg = make_cfg(["trainer.max_steps=40"], subdir=subdir)
        with open_dict(cfg):
            cfg.callbacks = compose_callbacks("es_wmv", window=10, patience=200, stop_training=False)
            if preempt:
                cfg.callbacks.preempt = {
                    "_target_": "tests.test_resume.SignalAtStep",
                    "step": 25,
                    "signum": int(signal.SIGUSR2),
                }
        if preempt:
            with pytest.raises(RunInterrupted):
                train(cfg)
            with open_dict(cfg):
                cfg.callbacks.pop("preempt")
        return train(cfg)

    resumed, uninterrupted = run("resumed", True), run("uninterrupted", False)
    keys = ("es_step", "es_variance", "es_psnr", "final_psnr")
    assert {k: resumed[k] for k in keys} == {k: uninterrupted[k] for k in keys}


def test_several_steps_per_lightning_batch_change_nothing(make_cfg):
    """module.steps_per_batch (auto: log_every on a GPU) only amortises Lightning's per-batch work:
    the same PSNRs, losses and early stop as one step per batch (bit for bit on the CPU)."""
    runs = {}
    for per_batch in (1, 7):
        cfg = make_cfg(
            ["trainer.max_steps=300", "module.log_every=10", f"module.steps_per_batch={per_batch}"],
            subdir=f"per_batch_{per_batch}",
        )
        cfg.callbacks = compose_callbacks("es_wmv", window=10, patience=20, check_every=1)
        runs[per_batch] = train(cfg)
    one, seven = runs[1], runs[7]
    assert seven["es_stopped"] and seven["steps"] == one["steps"] == one["es_stop_step"] + 1 < 300
    for key in ("es_step", "es_psnr", "best_psnr", "best_step", "final_psnr", "final_loss"):
        assert seven[key] == one[key], key


def test_the_default_stopping_rule_ends_a_run_and_hands_over_its_choice(make_cfg, tmp_path):
    cfg = make_cfg(["trainer.max_steps=400", "module.log_every=10"])
    cfg.callbacks = compose_callbacks("stop_early", window=10, patience=20, check_every=1)
    metrics = train(cfg)
    assert metrics["es_stopped"] and metrics["steps"] == metrics["es_stop_step"] + 1 < 400
    assert metrics["reconstruction"] == "es" and metrics["reconstruction_psnr"] == metrics["es_psnr"]
