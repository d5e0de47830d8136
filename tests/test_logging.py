"""W&B offline runs leave a run directory with logged history; the CSV logger works too."""

import csv

from untrained.train import train


def test_wandb_offline_run_directory(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    train(make_cfg(["logger=wandb", "trainer.max_steps=12", "module.log_every=4",
                    "+callbacks.images._target_=untrained.callbacks.images.ImageLogger",
                    "+callbacks.images.every_n_steps=5"]))
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("run-*.wandb")) and (runs[0] / "files").is_dir()
    assert list((runs[0] / "files" / "media" / "images").glob("*.png"))


def test_csv_logger_has_loss_every_step(make_cfg, tmp_path):
    train(make_cfg(["logger=csv", "trainer.max_steps=8", "module.log_every=3"]))
    rows = list(csv.DictReader(open(tmp_path / "run" / "csv" / "metrics.csv")))
    assert sorted({int(r["step"]) for r in rows if r.get("train/loss")}) == list(range(8))
