"""What a fit keeps of its iterates, for B members (B = 1 for a single fit): the latest estimate and the best
("oracle") iterate on the device, the per-step records waiting for the next host synchronisation, the host-side
history, and each member's status.

Metrics stay on the device: the best iterate is tracked with ``torch.where`` (a NaN PSNR, a diverged fit, never
wins), and values reach the host only at ``flush`` (every ``module.log_every`` steps: one synchronisation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Flushed:
    """The records one ``flush`` brought to the host."""

    steps: list[int]
    rows: list[list[dict[str, float]]]  # rows[b][i]: member b's values at steps[i]
    bar: dict[str, float]  # the progress bar's values: the members' mean of the latest loss, PSNR and best PSNR

    def logger_rows(self) -> list[tuple[int, dict[str, float]]]:
        """(step, row) for the logger: ``train/<key>`` for one member, ``train/<key>/<member>`` for several."""
        several = len(self.rows) > 1
        out = []
        for i, step in enumerate(self.steps):
            row = {}
            for b, member in enumerate(self.rows):
                row.update({f"train/{k}/{b}" if several else f"train/{k}": v for k, v in member[i].items()})
            out.append((step, row))
        return out


class Tracker(nn.Module):
    """Per-member bookkeeping of a fit; its tensors (in the checkpoint) have a leading member axis."""

    def __init__(self, members: int, image_shape: tuple[int, ...], has_ground_truth: bool):
        super().__init__()
        self.members, self.has_ground_truth = members, has_ground_truth
        image = torch.zeros(members, 1, *image_shape)
        self.register_buffer("best_psnr", torch.full((members,), -math.inf))
        self.register_buffer("best_step", torch.full((members,), -1, dtype=torch.long))
        self.register_buffer("best_image", image.clone())
        self.register_buffer("estimate", image.clone())
        # The raw network output of the latest step (before a method's averaging), which the variance stopping
        # rules watch as their paper does; recomputed every step, so not in the checkpoint.
        self.register_buffer("output", image.clone(), persistent=False)
        self.pending: list[tuple[int, dict[str, torch.Tensor]]] = []
        self.histories: list[dict[str, list]] = [{"step": [], "loss": []} for _ in range(members)]
        self.status: list[str] = ["running"] * members
        self.failures: list[str | None] = [None] * members

    @torch.no_grad()
    def update(
        self,
        step: int,
        estimate: torch.Tensor,
        record: dict[str, torch.Tensor],
        psnr: torch.Tensor | None,
        output: torch.Tensor | None = None,
    ):
        """After step ``step``: the members' estimates (B, 1, *image), their per-step values (each of shape (B,)),
        on evaluation steps their PSNR (B,), and their raw network outputs (the estimates where a method's output
        is not an image of that shape)."""
        self.estimate.copy_(estimate)
        self.output.copy_(output if output is not None and output.shape == estimate.shape else estimate)
        if psnr is not None:
            better = psnr > self.best_psnr
            self.best_image.copy_(torch.where(better.view(-1, *[1] * (estimate.ndim - 1)), estimate, self.best_image))
            self.best_step.copy_(torch.where(better, step, self.best_step))
            self.best_psnr.copy_(torch.where(better, psnr, self.best_psnr))
            record = {**record, "psnr": psnr}
        self.pending.append((step, record))

    def flush(self, at_step: int | None = None) -> Flushed | None:
        """Bring the pending records to the host (one synchronisation) and append them to the histories; a
        member whose latest loss is not finite fails."""
        if not self.pending:
            return None
        steps = [s for s, _ in self.pending]
        keys = sorted({k for _, r in self.pending for k in r})
        host = {k: [r[k].tolist() if k in r else None for _, r in self.pending] for k in keys}
        self.pending.clear()
        rows = [
            [{k: values[i][b] for k, values in host.items() if values[i] is not None} for i in range(len(steps))]
            for b in range(self.members)
        ]
        for history, member_rows in zip(self.histories, rows):
            for step, row in zip(steps, member_rows):
                history["step"].append(step)
                # Every list stays aligned with "step", also when a flush (e.g. an early stop) has no PSNR step.
                for k in (history.keys() | host.keys()) - {"step"}:
                    history.setdefault(k, [None] * (len(history["step"]) - 1)).append(row.get(k))
        latest = [{k: next((r[k] for r in reversed(member) if k in r), None) for k in keys} for member in rows]
        for b, values in enumerate(latest):
            if self.status[b] != "failed" and not math.isfinite(values["loss"]):
                self.status[b] = "failed"
                self.failures[b] = (
                    f"the loss became {values['loss']} at step {steps[-1]}: lower method.lr or check the data"
                )
        bar = {}
        for key in ("loss", "psnr"):
            shown = [v[key] for v in latest if v.get(key) is not None]
            if len(shown) == self.members:
                bar[key] = sum(shown) / self.members
        if self.has_ground_truth:
            bar["best"] = float(self.best_psnr.mean()) if self.members > 1 else float(self.best_psnr[0])
        return Flushed(steps, rows, bar)

    @property
    def all_failed(self) -> bool:
        return all(s == "failed" for s in self.status)

    def finish(self) -> None:
        """The fit ended: members still running completed."""
        self.status = ["completed" if s == "running" else s for s in self.status]

    # Checkpoints: the tensors are buffers (in the state_dict); the host-side state goes here ----------
    def host_state(self) -> dict:
        return {
            "histories": self.histories,
            "pending": self.pending,
            "status": self.status,
            "failures": self.failures,
        }

    def load_host_state(self, state: dict) -> None:
        self.histories, self.pending = state["histories"], state["pending"]
        self.status, self.failures = state["status"], state["failures"]
