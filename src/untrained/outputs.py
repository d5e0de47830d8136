"""Files every run leaves in its output directory: images, arrays, metrics.json and the curves (data loss, PSNR when
there is a ground truth, the stopping rules' statistics).

Every file is written to a temporary name and renamed over the old one, so that a run killed while writing (a
preempted job past SLURM's grace period) leaves the previous complete file, never a truncated one."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

log = logging.getLogger(__name__)
RESIDUAL = "relative data residual ‖A x − y‖ / ‖y‖ (no ground truth needed)"


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` once the write has succeeded."""
    path = Path(path)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")  # same suffix: writers choose formats by it
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def save_npy(path: Path, array) -> None:
    with replacing(path) as partial:
        np.save(partial, np.asarray(array))


def save_figure(fig, path: Path, **options) -> None:
    with replacing(path) as partial:
        fig.savefig(partial, **options)


def to_numpy_image(image: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) → (H, W) or (H, W, 3); (1, C, n) signals → (C, n)."""
    array = image.detach().float().cpu().numpy()[0]
    if array.ndim == 3:
        array = array[0] if array.shape[0] == 1 else np.moveaxis(array[:3], 0, -1)
    return array


def save_png(image: torch.Tensor, path: Path, data_range: float = 1.0) -> None:
    array = to_numpy_image(image)
    if array.ndim == 2 and image.ndim == 3:  # a 1D signal: plot it
        fig, ax = plt.subplots(figsize=(6, 3))
        for channel in array:
            ax.plot(channel)
        fig.tight_layout()
        save_figure(fig, path, dpi=100)
        plt.close(fig)
        return
    from PIL import Image

    scaled = np.clip(array / data_range, 0, 1) * 255
    with replacing(path) as partial:
        Image.fromarray(np.round(scaled).astype(np.uint8)).save(partial)


def write_json_atomic(data: dict, path: Path) -> None:
    with replacing(path) as partial:
        partial.write_text(json.dumps(data, indent=2, sort_keys=True, default=float))


def write_metrics(metrics: dict, output_dir: Path) -> None:
    """The one writer of ``metrics.json`` (atomically; a non-finite number becomes null)."""
    write_json_atomic(
        {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()},
        Path(output_dir) / "metrics.json",
    )


def plot_curves(history: dict, path: Path, markers: dict[str, int] | None = None, curves: tuple[str, ...] = ()) -> None:
    """Data loss, PSNR (when the history has it) and each of ``curves`` (history keys, e.g. a stopping rule's
    statistic) against the step, one panel each; ``markers`` (label → step) mark the PSNR and statistic panels."""
    steps = np.asarray(history["step"])
    panels = [("loss", "data loss", True)]
    if any(v is not None for v in history.get("psnr", [])):
        panels.append(("psnr", "PSNR [dB]", False))
    panels += [(name, name.replace("_", " "), True) for name in curves if name in history]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for ax, (key, label, log_scale) in zip(axes[0], panels):
        values = np.array([np.nan if v is None else v for v in history[key]], dtype=float)
        keep = ~np.isnan(values)
        (ax.semilogy if log_scale else ax.plot)(steps[keep], values[keep])
        if key != "loss":
            for name, step in (markers or {}).items():
                ax.axvline(step, ls="--", lw=0.8, color="k" if name == "best" else "r", label=f"{name} ({step})")
            if markers:
                ax.legend()
        ax.set(xlabel="step", ylabel=label, title=f"{label} vs step")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def with_curves(history: dict, curves: dict[str, tuple[list[int], list[float]]]) -> dict:
    """The module's history with each curve as one more key, aligned with its steps (None where it has no value)."""
    if not curves:
        return history
    merged = dict(history)
    for name, (steps, values) in curves.items():
        at = dict(zip(steps, values))
        merged[name] = [at.get(step) for step in history["step"]]
    return merged


def write_complex_outputs(output_dir: Path, problem, image: torch.Tensor) -> None:
    """A complex-valued task's (MRI's) reconstruction in the data's scale (``info['scale']`` undone): complex .npy,
    and its magnitude as NIfTI when nibabel is installed (``pip install -e ".[io]"``)."""
    with torch.no_grad():
        values = problem.to_domain(image.to(problem.y.device)).detach().cpu()[0] * problem.info.get("scale", 1.0)
    array = values.numpy().astype(np.complex64)
    save_npy(output_dir / "reconstruction_complex.npy", array)
    if importlib.util.find_spec("nibabel") is None:
        return
    import nibabel

    magnitude = np.abs(array).astype(np.float32)
    partial = output_dir / ".reconstruction.partial.nii.gz"  # nibabel picks the format by the full suffix
    try:
        nibabel.save(nibabel.Nifti1Image(magnitude[..., None], np.eye(4)), partial)
        os.replace(partial, output_dir / "reconstruction.nii.gz")
    finally:
        partial.unlink(missing_ok=True)


def write_attenuation_outputs(output_dir: Path, problem, image: torch.Tensor) -> None:
    """A CT reconstruction in the data's units: attenuation (``info['scale']`` × image, in ``info['units']``); with
    ``info['mu_water']``/``mu_air`` also Hounsfield units, and a DICOM beside the source slice's when the input was
    one (``info['dicom_source']``: its header, new UIDs, the reconstruction's size and pixel spacing)."""
    info = problem.info
    attenuation = image.detach().float().cpu().numpy()[0, 0] * float(info["scale"])
    save_npy(output_dir / "reconstruction_attenuation.npy", attenuation.astype(np.float32))
    if info.get("mu_water") is None:
        return
    water, air = float(info["mu_water"]), float(info["mu_air"])
    hounsfield = (attenuation - water) / (water - air) * 1000.0
    save_npy(output_dir / "reconstruction_hu.npy", hounsfield.astype(np.float32))
    if info.get("dicom_source"):
        write_dicom_like(Path(info["dicom_source"]), hounsfield, output_dir / "reconstruction.dcm")


def write_dicom_like(source: Path, hounsfield: np.ndarray, path: Path) -> None:
    """``hounsfield`` as a DICOM slice with the source slice's patient, study and geometry (a derived image)."""
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = pydicom.dcmread(source)
    rows, columns = int(ds.Rows), int(ds.Columns)
    size = hounsfield.shape
    crop = min(rows / size[0], columns / size[1])  # the task centre-cropped to the image's aspect, then resized
    if "PixelSpacing" in ds:
        ds.PixelSpacing = [float(ds.PixelSpacing[0]) * crop, float(ds.PixelSpacing[1]) * crop]
    ds.Rows, ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.PixelData = np.clip(np.round(hounsfield), -32768, 32767).astype("<i2").tobytes()
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.SeriesDescription = "untrained reconstruction"
    ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for tag in ("WindowCenter", "WindowWidth", "LargestImagePixelValue", "SmallestImagePixelValue"):
        if tag in ds:
            delattr(ds, tag)
    with replacing(path) as partial:
        ds.save_as(partial, enforce_file_format=True)


def write_in_data_units(output_dir: Path, problem, image: torch.Tensor) -> None:
    """The reconstruction in the data's convention, where it has one: complex MRI images, CT attenuation (and HU)."""
    if getattr(problem.operator, "domain_dtype", None) in (torch.complex64,):
        write_complex_outputs(output_dir, problem, image)
    elif problem.info.get("units") and problem.info.get("scale"):
        write_attenuation_outputs(output_dir, problem, image)


def write_run_outputs(
    output_dir: Path,
    module,
    metrics: dict,
    extra_images: dict[str, torch.Tensor] | None = None,
    curves: dict[str, tuple[list[int], list[float]]] | None = None,
) -> None:
    """Write reconstructions (.npy and .png), measurement, ground truth, curves and metrics.json. The numbers and
    arrays come first, so that a failure drawing a figure never loses them. ``curves``: per-step statistics of the
    reporting callbacks (name → (steps, values)), added to history.json and drawn beside the data loss."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    problem = module.problem
    write_metrics(metrics, output_dir)
    history = with_curves(module.history, curves or {})
    if history["step"]:
        write_json_atomic(history, output_dir / "history.json")
    images = {"final": module.estimate}
    if int(module.best_step) >= 0:
        images["best"] = module.best_image
    images.update(extra_images or {})
    for name, image in images.items():
        save_npy(output_dir / f"{name}.npy", image.detach().cpu().numpy()[0])
    save_npy(output_dir / "measurement.npy", problem.y.detach().cpu().numpy()[0])
    if "reconstruction" in images:
        write_in_data_units(output_dir, problem, images["reconstruction"])
    for name, image in images.items():
        save_png(problem.display(image), output_dir / f"{name}.png", problem.data_range)
    if problem.has_ground_truth:
        save_png(problem.display(problem.x_true), output_dir / "ground_truth.png", problem.data_range)
    for name, image in problem.baselines().items():
        save_png(problem.display(image), output_dir / f"baseline_{name}.png", problem.data_range)
    # An image-shaped real measurement is shown as an image (k-space of 2 coils has the shape, not the meaning).
    if not problem.y.is_complex() and tuple(problem.y.shape[1:]) == tuple(problem.image_shape):
        save_png(problem.display(problem.y), output_dir / "measurement.png", problem.data_range)
    if history["step"]:
        markers = {"best": metrics["best_step"]} if "best_step" in metrics else {}
        if "es_step" in metrics:
            markers["stopping rule"] = metrics["es_step"]
        # Without a ground truth there is no PSNR curve: the figure shows the data loss and the stopping statistics.
        name = "psnr_curve.png" if problem.has_ground_truth else "curves.png"
        plot_curves(history, output_dir / name, markers, tuple(curves or {}))
    method = getattr(module, "method", None)
    if hasattr(method, "write_outputs"):  # method-specific files: OES's mask, DOP's recovered corruption
        method.write_outputs(output_dir, problem)


# A run's metrics ---------------------------------------------------------------------------------
def device_name(trainer) -> str:
    """The device the fit ran on (Lightning moves the module back to the CPU when the fit ends)."""
    device = trainer.strategy.root_device
    return str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")


def fit_metrics(cfg, module, trainer, wall_time: float, reporting) -> tuple[dict, dict, dict]:
    """One fit's metrics.json entries, extra images and curves: its module's summary, the run's settings, the data
    residuals, and what its reporting callbacks add."""
    steps = int(trainer.global_step)
    metrics = module.summary()
    metrics.update(
        steps=steps,
        task=cfg.task.get("name"),
        method=cfg.method.get("name"),
        seed=int(cfg.seed),
        wall_time_s=wall_time,
        seconds_per_step=wall_time / max(steps, 1),
        device=device_name(trainer),
        task_info=module.problem.info,  # what a re-analysis needs: noise level, mask, data scale, views...
        metric_conventions=module.problem.metric_conventions(),
    )
    images, curves = {}, {}
    for callback in reporting:
        metrics.update(callback.report(module))
        images.update(callback.images(module))
        curves.update(callback.curves(module))
    # What the run hands over without a ground truth to pick by: the stopping rule's chosen iterate when it fired,
    # the held-out rule's (its minimum, validated by data the fit never saw) whenever it has one, otherwise the final
    # one (best.* needs the ground truth and stays an oracle).
    chosen = "es" if metrics.get("es_stopped") and "es" in images else "holdout" if "holdout" in images else "final"
    metrics["reconstruction"] = chosen
    images["reconstruction"] = images[chosen] if chosen != "final" else module.estimate
    if module.problem.has_ground_truth:
        metrics["reconstruction_psnr"] = metrics.get(f"{chosen}_psnr")
    residuals = {"reconstruction": images["reconstruction"], "final": module.estimate, **module.problem.baselines()}
    for name, image in residuals.items():
        key = f"{name}_residual" if name in ("reconstruction", "final") else f"baseline_{name}_residual"
        metrics[key] = relative_residual(module.problem, image)
    conventions = {**metrics["metric_conventions"], "*_residual": RESIDUAL}
    if not module.problem.has_ground_truth:  # no PSNR, SSIM or best iterate is reported: nothing to explain
        conventions = {k: v for k, v in conventions.items() if k not in ("psnr", "ssim", "best_*")}
    metrics["metric_conventions"] = conventions
    return metrics, images, curves


@torch.no_grad()
def relative_residual(problem, image: torch.Tensor) -> float:
    """‖A x − y‖ / ‖y‖ of a network-space image (the data fit that needs no ground truth)."""
    residual = problem.residual(image.to(problem.y.device))
    return float(torch.linalg.vector_norm(residual) / torch.linalg.vector_norm(problem.y).clamp_min(1e-30))


def write_results(run, outcome) -> dict:
    """Every output of a fitted run (``run.Run``, ``run.Outcome``): a single fit's files in the output directory;
    for a batched fit each member's in ``member_<b>/`` and the batch summary in the output directory. Returns
    the metrics written to the output directory's metrics.json."""
    output_dir = Path(run.cfg.paths.output_dir)
    interrupted = {"interrupted_by": outcome.interrupted_by} if outcome.interrupted_by else {}
    uncertainty = getattr(run, "uncertainty", None)  # uncertainty=ensemble / mc_dropout (docs/uncertainty.md)
    if not run.batched:
        metrics, images, curves = fit_metrics(run.cfg, run.module, run.trainer, outcome.wall_time_s, run.reporting[0])
        metrics.update(performance=run.module.performance_report(), **interrupted)
        if uncertainty is not None:  # MC dropout: the passes' mean is what the run hands over
            found, mean = uncertainty.write(output_dir, run.module.problem, uncertainty.draw(run.module))
            metrics.update(found)
            images["reconstruction"] = mean
            hand_over(metrics, run.module.problem, mean, f"{uncertainty.kind}_mean")
        write_run_outputs(output_dir, run.module, metrics, images, curves)
        return metrics
    size, results, chosen = len(run.members), [], []
    for b, (member, member_cfg) in enumerate(zip(run.members, run.configs)):
        metrics, images, curves = fit_metrics(member_cfg, member, run.trainer, outcome.wall_time_s, run.reporting[b])
        metrics.update(member=b, batch_size=size, task_index=member_cfg.task.get("index"), **interrupted)
        write_run_outputs(output_dir / f"member_{b}", member, metrics, images, curves)
        results.append(metrics)
        chosen.append(images["reconstruction"])
    finished = [m for m in results if m["status"] != "failed"]
    steps, wall_time = int(run.trainer.global_step), outcome.wall_time_s
    summary = {
        "status": ("interrupted" if outcome.interrupted_by else "completed") if finished else "failed",
        "batch_size": size,
        "steps": steps,
        "wall_time_s": wall_time,
        "seconds_per_step": wall_time / max(steps, 1),
        "reconstructions_per_hour": size * 3600 / wall_time if wall_time > 0 else None,
        "members": results,
        "device": device_name(run.trainer),
        "performance": run.module.performance_report(),
        **interrupted,
    }
    for key in ("best_psnr", "final_psnr", "reconstruction_residual"):
        values = [m[key] for m in finished if key in m]
        if values:
            summary[key] = sum(values) / len(values)
    output_dir.mkdir(parents=True, exist_ok=True)
    if uncertainty is not None and finished:  # an ensemble: the members' chosen iterates are its samples
        problem = run.members[0].problem
        members = [r for r, image in zip(results, chosen) if r["status"] != "failed"]
        samples = torch.cat([image for r, image in zip(results, chosen) if r["status"] != "failed"])
        found, mean = uncertainty.write(output_dir, problem, samples, members)
        summary.update(found)
        hand_over(summary, problem, mean, f"{uncertainty.kind}_mean")
        write_reconstruction(output_dir, problem, mean)
    write_metrics(summary, output_dir)
    return summary


@torch.no_grad()
def hand_over(metrics: dict, problem, image: torch.Tensor, name: str) -> None:
    """``image`` (network space) becomes the run's reconstruction in ``metrics``: its label, PSNR/SSIM, residual."""
    metrics["reconstruction"] = name
    if problem.has_ground_truth:
        metrics["reconstruction_psnr"] = float(problem.psnr(image.to(problem.y.device)))
        metrics["reconstruction_ssim"] = float(problem.ssim(image.to(problem.y.device)))
    metrics["reconstruction_residual"] = relative_residual(problem, image)


def write_reconstruction(output_dir: Path, problem, image: torch.Tensor) -> None:
    """A reconstruction written outside ``write_run_outputs`` (an ensemble's mean): .npy, .png, the data's units,
    and the ground truth beside it."""
    save_npy(output_dir / "reconstruction.npy", image.detach().cpu().numpy()[0])
    write_in_data_units(output_dir, problem, image)
    save_png(problem.display(image.to(problem.y.device)), output_dir / "reconstruction.png", problem.data_range)
    if problem.has_ground_truth:
        save_png(problem.display(problem.x_true), output_dir / "ground_truth.png", problem.data_range)
