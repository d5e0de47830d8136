"""W&B offline runs leave a run directory with logged history; the CSV logger works too."""

import csv

import lightning as L

from untrained.callbacks.progress import ProgressBar
from untrained.run import build_module
from untrained.train import train


def test_wandb_offline_run_directory(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    train(
        make_cfg(
            [
                "logger=wandb",
                "trainer.max_steps=12",
                "module.log_every=4",
                "+callbacks.images._target_=untrained.callbacks.images.ImageLogger",
                "+callbacks.images.every_n_steps=5",
            ]
        )
    )
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("run-*.wandb")) and (runs[0] / "files").is_dir()
    assert list((runs[0] / "files" / "media" / "images").glob("*.png"))


def test_csv_logger_has_loss_every_step(make_cfg, tmp_path):
    train(make_cfg(["logger=csv", "trainer.max_steps=8", "module.log_every=3"]))
    with open(tmp_path / "run" / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted({int(r["step"]) for r in rows if r.get("train/loss")}) == list(range(8))


def test_progress_bar_counts_steps_and_shows_the_flushed_values(make_cfg):
    """Batches of log_every = 5 steps: the bar runs over the 12 optimization steps, not the 3 batches, and
    shows the last flushed loss, PSNR and best PSNR."""
    bar = ProgressBar(refresh_rate=5)
    module = build_module(make_cfg(["trainer.max_steps=12", "module.log_every=5"]))
    trainer = L.Trainer(max_steps=12, logger=False, callbacks=[bar], enable_checkpointing=False, accelerator="cpu")
    trainer.fit(module)
    assert bar.train_progress_bar.total == 12 and bar.train_progress_bar.n == 12
    shown = bar.get_metrics(trainer, module)
    assert shown["loss"] == module.history["loss"][-1] and shown["best"] == float(module.best_psnr)
