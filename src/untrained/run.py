"""The one place that turns a config into a run: ``assemble(cfg)`` builds the module (one fit, or B fits in one
optimizer step when ``batching.size > 1``), its callbacks, logger and trainer; ``fit(run)`` fits it and says how
the fit ended. ``train()``, the benchmarks, the experiments and the tests all build runs here (``compose`` gives
them the config ``python train.py <overrides>`` would).
"""

from __future__ import annotations

import copy
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from untrained.callbacks.base import ReportingCallback
from untrained.callbacks.checkpoint import PreemptionCheckpoint, StopOnSignal
from untrained.callbacks.holdout import holdout_split
from untrained.callbacks.preemption import LATCH
from untrained.callbacks.uncertainty import ChosenWeights, UncertaintyMaps
from untrained.errors import UserError, check_choice, check_in_range, check_integer, check_options
from untrained.fit.base import TrackedFit
from untrained.fit.batched import BatchedModule, MemberCallbacks
from untrained.fit.module import UntrainedModule
from untrained.methods.base import Method
from untrained.metrics import CALIBRATION_BLOCK, UCE_BINS
from untrained.networks.base import ImageNetwork, Network
from untrained.speed.policy import Performance

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
MAX_BATCH_SIZE = 1024  # members built in one process; each holds its own network, problem and optimizer


# Options that were renamed or removed: their old names get a one-line hint instead of Hydra's generic error.
RENAMED_OPTIONS = {
    "performance.batch_size": "batching.size",
    "performance.batch_vary": "batching.vary",
    "performance.batch_indices": "batching.indices",
    "performance.batch_mode": "batching.mode",
    "task.tv_steps": "task.tv_max_iterations (PDHG now stops at task.tv_tolerance)",
    "method.tv_reduction": None,
}
MOVED_TARGETS = {"untrained.data.": "untrained.tasks."}


def check_renamed(overrides) -> None:
    """Stop with a one-line hint on a renamed or removed option among command-line overrides."""
    for override in overrides:
        key = str(override).lstrip("+~").split("=", 1)[0]
        if key in RENAMED_OPTIONS:
            new = RENAMED_OPTIONS[key]
            if new is None:
                raise UserError(
                    f"{key} was removed: penalty weights are per pixel now (docs/weights.md); drop the override."
                )
            raise UserError(f"{key} was renamed: use {new}.")


def compose(overrides=(), config_dir: str | Path = CONF_DIR, config_name: str = "train") -> DictConfig:
    """The config ``python train.py <overrides>`` runs (outside a Hydra job, e.g. in a test or a benchmark)."""
    GlobalHydra.instance().clear()
    overrides = list(overrides)
    check_renamed(overrides)
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = hydra_compose(config_name, overrides=overrides, return_hydra_config=True)
        preferred = preferred_choices(cfg, cfg.hydra.runtime.choices, overrides)
        if preferred:
            return hydra_compose(config_name, overrides=[*overrides, *preferred])
        with open_dict(cfg):
            del cfg["hydra"]
        return cfg


DEFAULT_NETWORK = "skip"  # train.yaml's `network` default
DEFAULT_CALLBACKS = "default"  # train.yaml's `callbacks` default


def preferred_choices(cfg: DictConfig, choices, overrides) -> list[str]:
    """Group choices a method or task prefers when the run has not made them (each group still at train.yaml's
    default and no override naming it; an explicit choice wins), as overrides to compose the config again with:

    - ``network=<name>``: the network a method's reference uses on this task
      (``conf/method_network/<method>_<task>.yaml``, e.g. aSeqDIP's U-Net on MRI);
    - ``callbacks=<name>``: the callbacks a task runs by default (``conf/task_callbacks/<task>.yaml``, e.g. early
      stopping that ends a denoising run).

    Hydra cannot let a method×task or task config override another group (overrides are not allowed under an
    interpolated default), so the config is composed again with these (``compose``, ``train.py``)."""
    named = {str(o).lstrip("+~").split("=", 1)[0].split("@", 1)[0] for o in overrides}
    preferred = []
    for group, default, entry in (
        ("network", DEFAULT_NETWORK, "method_network"),
        ("callbacks", DEFAULT_CALLBACKS, "task_callbacks"),
    ):
        name = OmegaConf.select(cfg, f"{entry}.name")
        if name is not None and choices.get(group) == default and group not in named:
            preferred.append(f"{group}={name}")
    return preferred


def build(config: DictConfig | None, group: str, **kwargs):
    """Instantiate one config node; errors a user caused surface as :class:`UserError`.

    Task and method configs carry a ``name`` label (for logging and reports) that is not an argument.
    """
    if config is None:
        return None
    node = OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else config
    if isinstance(node, dict) and group in ("task", "method"):
        node.pop("name", None)
    target = str(node.get("_target_", "")) if isinstance(node, dict) else ""
    for old, new in MOVED_TARGETS.items():
        if target.startswith(old):
            raise UserError(f"{group}._target_={target} has moved: use {new}{target.removeprefix(old)}.")
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        if isinstance(cause, TypeError) and "argument" in str(cause):
            raise UserError(
                f"Invalid {group} option: {cause}. Check the keys under '{group}' in your overrides."
            ) from None
        raise


# The config entries whose numbers ``check_config`` guards (hydra, paths and logger hold strings).
CHECKED_ENTRIES = (
    "seed",
    "task",
    "network",
    "method",
    "module",
    "trainer",
    "performance",
    "batching",
    "callbacks",
    "checkpoint",
    "uncertainty",
)


def check_config(cfg: DictConfig) -> None:
    """No NaN/Inf option, whole seeds, a positive step count: before anything is built or allocated."""
    plain = {
        key: OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value
        for key in CHECKED_ENTRIES
        if (value := cfg.get(key)) is not None
    }
    check_options(plain)
    if "max_steps" in (cfg.get("trainer") or {}):
        check_integer("trainer.max_steps", cfg.trainer.max_steps, 1)


def check_network_fits(network, image_shape: tuple[int, ...]) -> None:
    """The network's dimension, and the image size for networks that do not pad to their factor (an
    ``ImageNetwork`` takes any size above a minimum: ``UntrainedModule`` calls its ``fit_to``, which checks it)."""
    spatial = image_shape[1:]
    dim = network.dim if isinstance(network, Network) and network.dim is not None else len(spatial)
    if dim != len(spatial):
        raise UserError(
            f"The network is {dim}D but the task's signals are {len(spatial)}D ({'x'.join(map(str, spatial))}): "
            f"use a {len(spatial)}D network, e.g. network=skip network.dim={len(spatial)}."
        )
    if isinstance(network, ImageNetwork) or not isinstance(network, Network):
        return
    factor = network.downsampling_factor
    if any(n < factor for n in spatial):
        raise UserError(
            f"The image ({'x'.join(map(str, spatial))}) is smaller than the network's downsampling factor {factor}: "
            f"use a larger task.size or fewer network scales."
        )
    if any(n % factor for n in spatial):
        raise UserError(
            f"The image size {'x'.join(map(str, spatial))} is not divisible by the network's downsampling factor "
            f"{factor}: set task.size to a multiple of {factor} or use fewer network scales."
        )


def build_module(cfg: DictConfig, problem=None) -> UntrainedModule:
    """Task, method and network of one fit from the config, seeded, ready for the trainer. A ``problem`` made by
    the caller (an ``InverseProblem``, e.g. an experiment's own corruption of an image) replaces the task's."""
    check_config(cfg)
    L.seed_everything(cfg.seed, workers=False, verbose=False)
    split = holdout_split(cfg)
    if split is not None and cfg.method.get("name") == "adp":
        raise UserError(
            "method=adp learns the task's operator, which a held-out split hides part of: use another callbacks "
            "choice than es_holdout with method=adp."
        )
    if problem is not None and split is not None:
        problem = copy.deepcopy(problem)  # the caller's problem keeps all its measurements
    problem = build(cfg.task, "task") if problem is None else problem
    if split is not None:  # before the method's setup, which may build z (or more) from y
        problem.hold_out(split["fraction"], split["seed"], split["pattern"])
    method = build(cfg.method, "method")
    # MC dropout sets the network's dropout rate (uncertainty.dropout)
    dropout = {"dropout": cfg.uncertainty.dropout} if uncertainty_kind(cfg) == "mc_dropout" else {}
    network = build(
        cfg.network,
        "network",
        in_channels=method.input_channels(problem),
        out_channels=problem.image_shape[0],
        **dropout,
    )
    check_network_fits(network, problem.image_shape)
    return UntrainedModule(
        problem, network, method, **cfg.module, performance=Performance.from_config(cfg.get("performance"))
    )


# Batched fits ------------------------------------------------------------------------------------
def batch_size(cfg: DictConfig) -> int:
    """The number of members: ``batching.size``, or the length of ``batching.indices``."""
    node = cfg.get("batching") or {}
    size, indices = node.get("size", 1), node.get("indices")
    check_integer("batching.size", size, 1, MAX_BATCH_SIZE)
    if indices is None:
        return size
    if len(indices) < 2:
        raise UserError("batching.indices needs two or more task indices; for one, set task.index.")
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
        raise UserError(f"batching.indices must be whole numbers, e.g. [3,7,12], got {list(indices)}.")
    if size not in (1, len(indices)):
        raise UserError(f"batching.size={size} but batching.indices has {len(indices)} entries: give only indices.")
    return len(indices)


def member_config(cfg: DictConfig, index: int) -> DictConfig:
    """Member ``index``'s config: ``seed + index`` (noise, init, z) and, if asked, ``task.index + index``, or
    the ``index``-th of ``batching.indices``; a single-fit config."""
    member = copy.deepcopy(cfg)
    vary = list(cfg.batching.get("vary") or [])
    indices = cfg.batching.get("indices")
    unknown = set(vary) - {"seed", "index"}
    if unknown:
        raise UserError(f"batching.vary may contain seed and index, got {sorted(unknown)}.")
    with open_dict(member):
        member.batching.size = 1
        member.batching.indices = None
        if "seed" in vary:
            member.seed = cfg.seed + index
        if "index" in vary or indices is not None:
            if "index" not in cfg.task:
                raise UserError(
                    f"Task '{cfg.task.get('name')}' has no index: remove index from batching.vary and batching.indices."
                )
            member.task.index = indices[index] if indices is not None else cfg.task.index + index
    return member


# Uncertainty maps (docs/uncertainty.md) ----------------------------------------------------------
UNCERTAINTY_KINDS = ("none", "ensemble", "mc_dropout")


def uncertainty_kind(cfg: DictConfig) -> str:
    kind = (cfg.get("uncertainty") or {}).get("kind", "none")
    check_choice("uncertainty.kind (the uncertainty group: none, ensemble, mc_dropout)", kind, UNCERTAINTY_KINDS)
    return kind


def check_uncertainty(cfg: DictConfig) -> int:
    """Refuse combinations that make no sense; the number of members of the fit (K for an ensemble)."""
    kind = uncertainty_kind(cfg)
    if kind == "none":
        return batch_size(cfg)
    node, batching = cfg.uncertainty, cfg.get("batching") or {}
    if batching.get("size", 1) != 1 or batching.get("indices") is not None:
        raise UserError(
            f"uncertainty={kind} maps one measurement: remove batching.size/batching.indices "
            f"({'its members are the ensemble: set uncertainty.members' if kind == 'ensemble' else 'one fit'})."
        )
    check_integer("uncertainty.bins", node.get("bins", UCE_BINS), 1, 10_000)
    check_integer("uncertainty.block", node.get("block", CALIBRATION_BLOCK), 1, 4096)
    if kind == "ensemble":
        check_integer("uncertainty.members", node.members, 2, MAX_BATCH_SIZE)
        # every member's seed stays a seed (check_config: [0, 2³²))
        check_integer("uncertainty.seed_stride", node.seed_stride, 0, (2**32 - 1 - cfg.seed) // (node.members - 1))
        return node.members
    check_integer("uncertainty.passes", node.passes, 2, 100_000)
    check_in_range("uncertainty.dropout", node.dropout, 0, 1, high_open=True)
    if "dropout" not in (cfg.get("network") or {}):
        raise UserError(
            f"uncertainty=mc_dropout needs a network with a dropout option (skip, unet and its variants, "
            f"deep_decoder); network {cfg.network.get('_target_')} has none."
        )
    return 1


def ensemble_member_config(cfg: DictConfig, index: int) -> DictConfig:
    """Member ``index`` of an ensemble: a single-fit config with seed + index · uncertainty.seed_stride (network
    init, z, input noise; the measurement is the base config's, built once by ``assemble``)."""
    member = copy.deepcopy(cfg)
    with open_dict(member):
        member.seed = cfg.seed + index * cfg.uncertainty.seed_stride
    return member


# A run -------------------------------------------------------------------------------------------
@dataclass
class Run:
    """What ``fit`` needs and what the outputs are written from."""

    cfg: DictConfig
    configs: list[DictConfig]  # each member's single-fit config (the run's own for a single fit)
    module: TrackedFit  # the UntrainedModule of a single fit, or the BatchedModule of its members
    members: list[UntrainedModule]  # the single fit's module, or the batched fit's members
    reporting: list[list[ReportingCallback]]  # each member's callbacks that add to its metrics.json
    signals: StopOnSignal | None  # answers Ctrl-C and SLURM's signals (a PreemptionCheckpoint for a single fit)
    logger: object
    trainer: L.Trainer
    uncertainty: UncertaintyMaps | None = None  # uncertainty=ensemble / mc_dropout: writes the maps

    @property
    def batched(self) -> bool:
        return isinstance(self.module, BatchedModule)

    @property
    def checkpoint(self) -> PreemptionCheckpoint | None:
        return self.signals if isinstance(self.signals, PreemptionCheckpoint) else None


@dataclass
class Outcome:
    """How a fit ended."""

    wall_time_s: float
    interrupted_by: str | None = None
    crash: BaseException | None = field(default=None, repr=False)

    @property
    def status(self) -> str:
        return "failed" if self.crash else "interrupted" if self.interrupted_by else "completed"


def assemble(cfg: DictConfig, extra_callbacks=(), logger: bool = True, problem=None) -> Run:
    """Module, callbacks, logger and trainer of the run ``cfg`` describes; ``extra_callbacks`` (e.g. a benchmark's
    clock) go before the signal handling, ``logger=False`` leaves the configured logger out, and ``problem``
    replaces the task's (single fits; see ``build_module``)."""
    check_config(cfg)
    size = check_uncertainty(cfg)
    kind = uncertainty_kind(cfg)
    if problem is not None and size > 1 and kind != "ensemble":
        raise UserError("A problem given to assemble() is one measurement: use batching.size=1.")
    split = holdout_split(cfg)
    if split is not None and kind != "none" and split["refit"]:
        raise UserError(
            f"uncertainty={kind} maps the run's chosen iterates, which a refit would replace: set "
            "callbacks.early_stopping.refit=false."
        )
    if split is not None and size > 1 and split["refit"]:
        raise UserError(
            "callbacks.early_stopping.refit refits one measurement: set it to false for batched fits (batching.size>1)."
        )
    if kind == "ensemble":
        # One measurement for all members: built once from the base config (a member's own seed would draw its
        # own noise), each member fitting its own copy.
        L.seed_everything(cfg.seed, workers=False, verbose=False)
        shared = build(cfg.task, "task") if problem is None else problem
        configs = [ensemble_member_config(cfg, b) for b in range(size)]
        members = [build_module(c, copy.deepcopy(shared)) for c in configs]
    else:
        configs = [cfg] if size == 1 else [member_config(cfg, b) for b in range(size)]
        members = [build_module(c, problem) for c in configs]
    built = [[build(c, "callbacks") for c in (m.get("callbacks") or {}).values() if c is not None] for m in configs]
    uncertainty, chosen = None, None
    if kind == "mc_dropout" and type(members[0].method).training_loss is not Method.training_loss:
        raise UserError(
            f"uncertainty=mc_dropout draws its passes as network(z), which method '{members[0].method.name}' does "
            "not fit (its own training loss): use uncertainty=ensemble."
        )
    if kind != "none":
        node = cfg.uncertainty
        chosen = ChosenWeights() if kind == "mc_dropout" else None
        samples = size if kind == "ensemble" else node.passes
        uncertainty = UncertaintyMaps(
            kind, samples, node.get("bins", UCE_BINS), node.get("block", CALIBRATION_BLOCK), chosen, cfg.seed
        )
    reporting = [[c for c in callbacks if isinstance(c, ReportingCallback)] for callbacks in built]
    if size == 1:
        module, callbacks = members[0], built[0]
    else:
        module = BatchedModule(
            members,
            **cfg.module,
            performance=Performance.from_config(cfg.get("performance")),
            mode=cfg.batching.get("mode", "auto"),
        )
        callbacks = [c for c in built[0] if not isinstance(c, ReportingCallback)] + [MemberCallbacks(reporting)]
    # After the stopping rule it watches (MC dropout: the weights at the rule's step).
    callbacks = [*callbacks, *([chosen] if chosen else [])]
    # Last, so that a checkpoint taken after a step holds the other callbacks' state of that step.
    signals = build(cfg.get("checkpoint"), "checkpoint")
    callbacks = [*callbacks, *extra_callbacks, *([signals] if signals else [])]
    run_logger = (build(cfg.get("logger"), "logger") if logger else None) or False
    # Inside SLURM the signal callback answers the signals; Lightning's auto-requeue would save another checkpoint.
    plugins = {"plugins": [SLURMEnvironment(auto_requeue=False)]} if signals and SLURMEnvironment.detect() else {}
    trainer = build(cfg.trainer, "trainer", callbacks=callbacks, logger=run_logger, **plugins)
    return Run(cfg, configs, module, members, reporting, signals, run_logger, trainer, uncertainty)


def fit(run: Run) -> Outcome:
    """Fit the run (resuming from its checkpoint when there is one); keep what it has if the fit raises."""
    checkpoint = run.checkpoint
    start = time.perf_counter()
    crash = None
    try:
        run.trainer.fit(run.module, ckpt_path=checkpoint.resume_path() if checkpoint else None)
    except Exception as error:  # keep what the run has (best iterate, history), then report the error
        crash = error
    finally:
        if run.signals:
            run.signals.restore_handlers()
    wall_time = time.perf_counter() - start + (checkpoint.elapsed_before if checkpoint else 0.0)
    if run.batched:
        run.module.unstack()
    interrupted_by = run.signals.interrupted_by if run.signals else None
    if crash is not None and (interrupted_by or LATCH.received is not None):
        # Raised after a signal, by what the signal stopped (SLURM signals W&B's service process too): the run was
        # interrupted, not failed; it resumes from its last checkpoint.
        log.warning("Stopped by the signal (%s: %s).", type(crash).__name__, crash)
        interrupted_by, crash = interrupted_by or signal.Signals(LATCH.received).name, None
        if run.signals and run.signals.interrupted is None:
            run.signals.interrupted = LATCH.received
    for member in run.members:
        if crash is not None:
            member.status, member.failure = "failed", f"{type(crash).__name__}: {crash}"
        elif interrupted_by and member.status != "failed":
            member.status = "interrupted"  # after the fit: the checkpoint says "running", so a resumed run completes
    return Outcome(wall_time, interrupted_by, crash)
