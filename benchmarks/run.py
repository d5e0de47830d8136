"""Speed benchmark: the framework against a plain PyTorch loop, per task × network, and batched throughput.

    python -m benchmarks                 # every task's default size × every network, CPU (+ GPU when present)
    python -m benchmarks --quick         # tiny sizes, a few steps: a smoke test (< 30 s)
    python -m benchmarks --tasks denoising --networks skip --fast --batch-sizes 1,2,4

For each (task, network, device) the same network, loss and input are fitted by

* ``plain``: the loop of the reference repositories (fp32, eager, ``loss.item()`` and a PSNR read on
  the host every step), and
* ``untrained``: ``trainer.fit`` of the framework with its default callbacks (progress bar, image
  logger), module settings and the given logger; with ``--fast`` also the fast path
  (``performance.*=true``),

alternating, several rounds, in one process. Reported per variant: the median seconds per warm step
(the JSON also has the mean, which holds Lightning's per-batch work and the log flushes), steps/s, the
peak memory (CUDA: max allocated; CPU: peak RSS sampled during the variant's run), the
time of a full reconstruction at the method's default step count, and the ratio to ``plain``. The
framework's overhead is measured directly as well: per step, the time outside
``method.optimization_step`` (Lightning's loop, callbacks, logging, metric tracking), which the
plain loop spends on its ``.item()`` and PSNR reads. Results go to ``<out>/<name>.{md,json}``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch

from benchmarks.host_reads import HostSyncCounter
from untrained.callbacks.base import StepCallback
from untrained.methods.base import Method
from untrained.run import assemble, build_module, compose, fit
from untrained.speed.compile import first_line
from untrained.speed.memory import reuse_freed_memory
from untrained.speed.policy import Performance
from untrained.speed.runner import StepRunner
from untrained.train import close_experiment

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
# --quick: tiny problems and networks (the tests' FAST setting), so the whole run is a smoke test.
QUICK_TASK = {"size": 32}
QUICK_NETWORK = {
    "skip": ["network.channels_down=[16,16,16]", "network.channels_up=[16,16,16]", "network.channels_skip=[4,4,4]"]
}


def switches(autocast=False, channels_last=False, compile=False, cuda_graphs=False) -> list[str]:
    flags = {"autocast": autocast, "channels_last": channels_last, "compile": compile, "cuda_graphs": cuda_graphs}
    return [f"performance.{k}={str(v).lower()}" for k, v in flags.items()]


EAGER = switches()
# --fast: each part of the fast path, then all of it (the GPU default for capturable methods).
FAST_VARIANTS = {
    "untrained_graph": switches(cuda_graphs=True),
    "untrained_bf16": switches(autocast=True, channels_last=True),
    "untrained_compiled": switches(autocast=True, channels_last=True, compile=True),
    "untrained_fast": switches(True, True, True, True),
    "untrained_default": [],  # the switches at auto: what a run gets on this machine
    "untrained_channels_last": switches(channels_last=True),  # fp32: the CPU default without bf16 matrix units
}
OPT_IN_VARIANTS = ("untrained_default", "untrained_channels_last")
# Fast variants timed again in a bare loop (bare_fast, bare_default): the framework's overhead.
BARE_TWINS = ("untrained_fast", "untrained_default")


# Configs -----------------------------------------------------------------------------------------
def compose_config(overrides: list[str]):
    return compose(overrides, CONF_DIR)


def config_names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


# The method a network exists for, used unless --method names one (the unrolled network is ADP's lower level).
NETWORK_METHOD = {"unrolled_pg": "adp"}
# The analytic 1D problems run the convolutional networks in 1D: the skip net as experiments/configs/dip_1d.yaml.
SIGNAL_TASKS = {"integration_1d", "deconvolution_1d"}
SIGNAL_NETWORK = {"skip": ["experiment=dip_1d"], "drp": ["network.dim=1"]}


def base_overrides(task: str, network: str, device: str, args, output_dir: str) -> list[str]:
    method = args.method or NETWORK_METHOD.get(network, "vanilla")
    overrides = [
        f"task={task}",
        f"network={network}",
        f"method={method}",
        f"trainer.accelerator={device}",
        f"logger={args.logger}",
        f"paths.output_dir={output_dir}",
        "hydra.run.dir=.",
        "callbacks=default",  # every task runs all its steps (denoising would otherwise stop early by default)
    ]
    if task in SIGNAL_TASKS:
        overrides = SIGNAL_NETWORK.get(network, []) + overrides
    if args.quick:
        task_cfg = compose_config([f"task={task}"]).task
        overrides += [f"task.{k}={v}" for k, v in QUICK_TASK.items() if k in task_cfg]
        overrides += QUICK_NETWORK.get(network, [])
    return overrides + list(args.override)


# Clocks --------------------------------------------------------------------------------------------
class Clock:
    """Timestamps without host synchronisation: CUDA events on a GPU, ``perf_counter`` on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def now(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self, start, end) -> float:
        if not self.cuda:
            return end - start
        end.synchronize()
        return start.elapsed_time(end) / 1000


class StepClock(StepCallback):
    """Per step: the time from the end of the step before (or the fit's start) to its end, and the part of
    it spent in the module's step runner (``before_step``/``after_step``: it calls its observers around every
    step). Steps end at ``on_step_end``, which the single-run module calls after every step, however many a
    Lightning batch holds (``module.steps_per_batch``): Lightning's per-batch work falls on the first step of
    each batch (in the mean, beside the median). The batched module takes one step per batch and is timed at
    batch ends."""

    def __init__(self):
        self.ends, self.compute = [], []  # (timestamp, steps done); (start, end, interval index)

    def on_fit_start(self, trainer, module) -> None:
        self.clock = Clock(module.device)
        self.per_step = not hasattr(module, "members")  # the batched module takes one step per batch

    def before_step(self) -> None:
        self.started = self.clock.now()

    def after_step(self) -> None:
        self.compute.append((self.started, self.clock.now(), len(self.ends)))

    def on_train_start(self, trainer, module) -> None:
        if self not in module.runner.observers:  # the runner is built in the module's on_fit_start
            module.runner.observers.append(self)
        self.ends.append((self.clock.now(), trainer.global_step))

    def on_step_end(self, trainer, module, step: int) -> None:
        self.ends.append((self.clock.now(), step + 1))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if not self.per_step:
            self.ends.append((self.clock.now(), trainer.global_step))

    def intervals(self) -> list[tuple[float, int, int]]:
        """(seconds, steps, index) from each end to the next."""
        return [
            (self.clock.seconds(a, b), n - m, i + 1) for i, ((a, m), (b, n)) in enumerate(zip(self.ends, self.ends[1:]))
        ]

    def step_seconds(self) -> list[float]:
        return [t / n for t, n, _ in self.intervals() for _ in range(n)]

    def overhead_seconds(self) -> list[float]:
        """Per step: the interval minus the optimizer step's time, for the intervals with both."""
        inside: dict[int, float] = {}
        for start, end, index in self.compute:
            inside[index] = inside.get(index, 0.0) + self.clock.seconds(start, end)
        return [(t - inside[i]) / n for t, n, i in self.intervals() if i in inside for _ in range(n)]


class PeakMemory:
    """Peak memory of a block: CUDA max allocated, or the process's RSS sampled every 10 ms on the CPU."""

    def __init__(self, device: torch.device):
        self.device, self.peak = device, 0

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    @contextmanager
    def measure(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(self.device)
            yield
            torch.cuda.synchronize()
            self.peak = max(self.peak, torch.cuda.max_memory_allocated(self.device))
            return
        done = threading.Event()

        def sample():
            while not done.is_set():
                self.peak = max(self.peak, self._rss())
                done.wait(0.01)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()


# The two loops -----------------------------------------------------------------------------------
def fit_framework(cfg, device: torch.device, memory: PeakMemory) -> StepClock:
    """``untrained``: what ``train(cfg)`` runs (``run.assemble`` and ``run.fit``), plus a step clock."""
    clock = StepClock()
    run = assemble(cfg, [clock])
    with memory.measure():
        outcome = fit(run)
    close_experiment(run.logger)
    if outcome.crash is not None:
        raise outcome.crash
    return clock


def fit_plain(cfg, device: torch.device, memory: PeakMemory) -> dict[str, list[float]]:
    """The reference repositories' loop on the same network, z, loss and data: fp32, eager, reads every step.

    A method with an update rule of its own (ADP's bilevel step, OES, DeepRED) runs that rule here too."""
    module = build_module(cfg)  # the same seeded network, z and problem as the framework's run
    network, method, problem = module.network.to(device), module.method.to(device), module.problem.to(device)
    network.train()
    own_rule = type(method).optimization_step is not Method.optimization_step
    optimizer = (
        method.configure_optimizer(network) if own_rule else torch.optim.Adam(network.parameters(), lr=method.lr)
    )
    steps, reads = [], []
    with memory.measure():
        for step in range(cfg.trainer.max_steps):
            start = time.perf_counter()
            if own_rule:
                out = method.optimization_step(network, problem, step, optimizer, lambda loss: loss.backward())
            else:
                optimizer.zero_grad()
                out = method.training_loss(network, problem, step)
                out.loss.backward()
                optimizer.step()
            method.after_step(network, problem, step, out)  # e.g. aSeqDIP's input update
            stepped = time.perf_counter()
            loss = out.loss.item()  # noqa: F841 -- the reference scripts print/track it every step
            if problem.has_ground_truth:
                psnr = problem.psnr(out.output.detach()).item()  # noqa: F841
            end = time.perf_counter()
            steps.append(end - start)
            reads.append(end - stepped)
    return {"steps": steps, "reads": reads}


def fit_bare(cfg, device: torch.device, memory: PeakMemory) -> list[float]:
    """The framework's step without the framework: the same step runner (``cfg.performance``) and on-device
    PSNR and best-iterate tracking, in a bare loop with no Lightning, callbacks or logger, reading the
    loss every ``module.log_every`` steps. The framework's step time over this one is its overhead."""
    module = build_module(cfg).to(device)
    runner = StepRunner.for_method(
        module.network, module.problem, module.method, device, Performance.from_config(cfg.performance)
    )
    module.network.train()
    optimizer = module.method.configure_optimizer(module.network)
    clock, ends = Clock(device), []
    with memory.measure():
        for step in range(cfg.trainer.max_steps):
            out = runner.step(step, optimizer, lambda loss: loss.backward())
            estimate = module.method.after_step(module.network, module.problem, step, out)
            with torch.no_grad():
                psnr = module.problem.psnr(estimate).reshape(1)
            module.tracker.update(step, estimate[None], {"loss": out.loss.detach().reshape(1)}, psnr)
            if (step + 1) % module.log_every == 0:
                module.tracker.flush()
            ends.append(clock.now())
    return [clock.seconds(a, b) for a, b in zip(ends, ends[1:])]


def host_reads_per_step(cfg, steps: int = 50) -> dict[str, float]:
    """Tensor → host reads (each one a GPU synchronisation) per step, counted on the CPU.

    Runs of ``steps`` and ``2 * steps`` steps are counted; their difference over ``steps`` leaves out
    the one-off reads of setting up (baselines, configuration) and is the steady per-step figure.
    """
    cpu = torch.device("cpu")
    counts = {}
    for name, loop in (("untrained", fit_framework), ("plain", fit_plain)):
        totals = []
        for length in (steps, 2 * steps):
            run_cfg = copy.deepcopy(cfg)
            run_cfg.trainer.max_steps = length
            with HostSyncCounter() as counter:
                loop(run_cfg, cpu, PeakMemory(cpu))
            totals.append(counter.count)
        counts[name] = (totals[1] - totals[0]) / steps
    return counts


# Measurements -------------------------------------------------------------------------------------
def summarise(name: str, step_times: list[float], memory: int, default_steps: int, extra: dict | None = None) -> dict:
    median = statistics.median(step_times)
    return {
        "variant": name,
        "seconds_per_step": median,
        "mean_seconds_per_step": statistics.fmean(step_times),
        "steps_per_second": 1 / median,
        "spread": [min(step_times), max(step_times)],
        "samples": len(step_times),
        "peak_memory_mb": memory / 2**20,
        "full_reconstruction_s": median * default_steps,
        "default_steps": default_steps,
        **(extra or {}),
    }


def benchmark_combo(task: str, network: str, device_name: str, args) -> dict:
    device = torch.device("cuda" if device_name == "gpu" else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        overrides = base_overrides(task, network, device_name, args, tmp)
        default_steps = int(compose_config(overrides).trainer.max_steps)
        timed = [f"trainer.max_steps={args.warmup + args.steps}"]
        variants = {"plain": None, "untrained": timed + EAGER}
        if args.fast:
            variants.update({name: timed + FAST_VARIANTS[name] for name in args.fast_variants})
            variants.update(
                {
                    name.replace("untrained", "bare"): timed + FAST_VARIANTS[name]
                    for name in BARE_TWINS
                    if name in args.fast_variants
                }
            )
        samples = {name: [] for name in variants}
        overheads, plain_reads = {}, []
        memory = {name: PeakMemory(device) for name in variants}
        for round_index in range(args.rounds):
            order = list(variants) if round_index % 2 == 0 else list(reversed(variants))
            for name in order:
                cfg = compose_config(overrides + (variants[name] or timed))
                if name == "plain":
                    plain = fit_plain(cfg, device, memory[name])
                    samples[name] += plain["steps"][args.warmup :]
                    plain_reads += plain["reads"][args.warmup :]
                elif name.startswith("bare"):
                    samples[name] += fit_bare(cfg, device, memory[name])[args.warmup :]
                else:
                    clock = fit_framework(cfg, device, memory[name])
                    samples[name] += clock.step_seconds()[args.warmup :]
                    overheads.setdefault(name, []).extend(clock.overhead_seconds()[args.warmup :])
        rows = []
        for name in variants:
            extra = {}
            if overheads.get(name):
                median_step = statistics.median(samples[name])
                extra = {
                    "overhead_s": statistics.median(overheads[name]),
                    "overhead_pct": 100 * statistics.median(overheads[name]) / median_step,
                }
            if name == "plain":
                extra = {"reads_s": statistics.median(plain_reads)}
            rows.append(summarise(name, samples[name], memory[name].peak, default_steps, extra))
        plain_step = rows[0]["seconds_per_step"]
        for row in rows:
            row["ratio_to_plain"] = row["seconds_per_step"] / plain_step
            row["speedup_vs_plain"] = plain_step / row["seconds_per_step"]
        return {"task": task, "network": network, "device": device_name, "overrides": overrides, "variants": rows}


def benchmark_batched(device_name: str, args) -> dict:
    """Reconstructions per hour against B, at ``--batch-size-image`` px, at the method's default step count.

    Timed fp32 eager (``eager``: vmapped members; ``loop``: one member after the other, see
    ``batching.mode``) and, on a GPU, vmapped with the CUDA graph of the step (``graph``, the GPU
    default) and with bf16 weights too (``graph_bf16``: ``performance.autocast=true``), on a CPU with
    every switch at auto (``default``) and vmapped with bf16 weights (``vmap_bf16``); B = 1 is the ordinary
    single-run path. ``--batch-modes`` picks some of them (the ``*_bf16`` ones are timed on request only).
    """
    device = torch.device("cuda" if device_name == "gpu" else "cpu")
    if device.type == "cuda":
        extra = {
            "graph": switches(cuda_graphs=True) + ["batching.mode=vmap"],
            "graph_bf16": switches(autocast=True, cuda_graphs=True) + ["batching.mode=vmap"],
        }
    else:  # the CPU default: loop, bf16 + channels-last on AMX CPUs
        extra = {"default": [], "vmap_bf16": switches(autocast=True) + ["batching.mode=vmap"]}
    modes = {"eager": EAGER + ["batching.mode=vmap"], "loop": EAGER + ["batching.mode=loop"], **extra}
    if args.batch_modes:
        elsewhere = sorted(set(args.batch_modes) - set(modes))
        if elsewhere:
            print(f"[benchmark] batched {elsewhere}: not on {device_name}, skipped", file=sys.stderr, flush=True)
        modes = {name: flags for name, flags in modes.items() if name in args.batch_modes}
    else:  # the bf16-weights variants on request only
        modes = {name: flags for name, flags in modes.items() if not name.endswith("_bf16")}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        overrides = base_overrides("denoising", "skip", device_name, args, tmp)
        overrides = [o for o in overrides if not o.startswith("task.size")] + [f"task.size={args.batch_image_size}"]
        default_steps = int(compose_config(overrides).trainer.max_steps)
        for mode, flags in modes.items():
            for size in args.batch_sizes:
                cfg = compose_config(
                    overrides + [f"trainer.max_steps={args.warmup + args.steps}", f"batching.size={size}", *flags]
                )
                memory = PeakMemory(device)
                clock = fit_framework(cfg, device, memory)
                row = summarise(f"B={size}", clock.step_seconds()[args.warmup :], memory.peak, default_steps)
                row.update(
                    mode=mode, batch_size=size, reconstructions_per_hour=size * 3600 / row["full_reconstruction_s"]
                )
                rows.append(row)
    baseline = {r["mode"]: r["reconstructions_per_hour"] for r in rows if r["batch_size"] == args.batch_sizes[0]}
    for row in rows:
        row["throughput_vs_b1"] = row["reconstructions_per_hour"] / baseline[row["mode"]]
        if "eager" in baseline:
            row["throughput_vs_b1_eager"] = row["reconstructions_per_hour"] / baseline["eager"]
    return {
        "task": "denoising",
        "network": "skip",
        "device": device_name,
        "image_size": args.batch_image_size,
        "rows": rows,
    }


# Report -----------------------------------------------------------------------------------------
def machine() -> dict:
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg(),
    }
    try:
        info["cpu"] = next(
            line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")
        )
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def markdown(report: dict) -> str:
    m, s = report["machine"], report["settings"]
    lines = [
        f"# untrained speed benchmark ({'quick' if s['quick'] else 'full'})",
        "",
        f"- machine: {m.get('cpu')} ({m['cpu_count']} cores, {m['torch_threads']} torch threads)"
        + (f", GPU {m['gpu']} (CUDA {m['cuda']})" if "gpu" in m else ", no GPU")
        + f"; load average at start {', '.join(f'{x:.1f}' for x in m['load_average_at_start'])}",
        f"- torch {m['torch']}, lightning {m['lightning']}, python {m['python']}",
        f"- settings: method {s['method'] or 'vanilla (adp for unrolled_pg)'}, logger {s['logger']}, "
        f"{s['warmup']} warm-up + {s['steps']} timed steps "
        f"× {s['rounds']} rounds (alternating), medians over timed steps",
        f"- command: `{s['command']}`",
        "",
        "| task | network | device | variant | s/step | steps/s | ratio to plain | overhead | peak MB "
        "| full run (steps) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for combo in report["results"]:
        if "skipped" in combo:
            lines.append(
                f"| {combo['task']} | {combo['network']} | {combo['device']} "
                f"| skipped: {combo['skipped']} | | | | | | |"
            )
            continue
        for v in combo["variants"]:
            overhead = (
                f"{1000 * v['overhead_s']:.1f} ms ({v['overhead_pct']:.1f}%)"
                if "overhead_s" in v
                else (f"reads {1000 * v['reads_s']:.1f} ms" if "reads_s" in v else "")
            )
            lines.append(
                f"| {combo['task']} | {combo['network']} | {combo['device']} | {v['variant']} "
                f"| {v['seconds_per_step']:.4f} | "
                f"{v['steps_per_second']:.2f} | {v['ratio_to_plain']:.3f} | {overhead} | {v['peak_memory_mb']:.0f} | "
                f"{v['full_reconstruction_s']:.0f} s ({v['default_steps']}) |"
            )
    if report.get("host_reads_per_step"):
        r = report["host_reads_per_step"]
        lines += [
            "",
            f"Tensor → host reads per step (each a GPU synchronisation; counted on the CPU, "
            f"module.log_every=25): untrained {r['untrained']:.2f}, plain loop {r['plain']:.2f}.",
        ]
    for batch in report.get("batched", []):
        lines += [
            "",
            f"## Batched fits: denoising {batch['image_size']}², skip network, {batch['device']}",
            "",
            "| step | B | s/step | peak MB | reconstructions/hour | vs B=1 (same step) | vs B=1 eager |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in batch["rows"]:
            lines.append(
                f"| {row['mode']} | {row['batch_size']} | {row['seconds_per_step']:.4f} "
                f"| {row['peak_memory_mb']:.0f} | {row['reconstructions_per_hour']:.2f} "
                f"| {row['throughput_vs_b1']:.2f}× | {row.get('throughput_vs_b1_eager', float('nan')):.2f}× |"
            )
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few steps (smoke test)")
    parser.add_argument("--tasks", nargs="*", help="task configs (default: all in conf/task)")
    parser.add_argument("--networks", nargs="*", help="network configs (default: all in conf/network)")
    parser.add_argument("--devices", nargs="*", choices=["cpu", "gpu"], help="default: cpu, and gpu when available")
    parser.add_argument("--method", help="method config (default: vanilla; adp for network=unrolled_pg)")
    parser.add_argument("--logger", default="csv", help="logger config: csv (default), wandb or none")
    parser.add_argument("--steps", type=int, help="timed steps per round (default 5; quick 3)")
    parser.add_argument("--warmup", type=int, help="untimed steps per round (default 2; quick 1)")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 2; quick 1)")
    parser.add_argument("--fast", action="store_true", help="also time the fast path (performance.*=true)")
    parser.add_argument(
        "--fast-variants",
        nargs="*",
        default=[v for v in FAST_VARIANTS if v not in OPT_IN_VARIANTS],
        choices=list(FAST_VARIANTS),
        help="which parts of the fast path --fast times (default: all but untrained_default, the switches "
        "at auto, which on a GPU is untrained_fast, and untrained_channels_last); untrained_fast and "
        "untrained_default add "
        "bare_fast and bare_default, the same step without Lightning, callbacks or logger",
    )
    parser.add_argument(
        "--batch-sizes",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=None,
        help="batched fits to time, e.g. 1,2,4 (default: none; quick: 1,2)",
    )
    parser.add_argument("--batched-only", action="store_true", help="time the batched fits only (no task × network)")
    parser.add_argument(
        "--batch-modes",
        nargs="*",
        choices=["eager", "loop", "graph", "graph_bf16", "default", "vmap_bf16"],
        help="batched variants (default: all but *_bf16): eager loop + graph graph_bf16 (GPU), default vmap_bf16 (CPU)",
    )
    parser.add_argument("--batch-image-size", type=int, help="image size of the batched fits (default 64; quick 32)")
    parser.add_argument(
        "--host-reads",
        action="store_true",
        help="also count tensor → host reads per step (denoising × skip, tiny size)",
    )
    parser.add_argument(
        "--keep-malloc-defaults",
        action="store_true",
        help="leave glibc's malloc settings alone (train() makes it reuse freed memory: fast.reuse_freed_memory)",
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--name", help="output file name (default: <devices>[-quick])")
    parser.add_argument("override", nargs="*", help="extra Hydra overrides for every run, e.g. module.log_every=50")
    args = parser.parse_args(argv)
    defaults = {"steps": (3, 5), "warmup": (1, 2), "rounds": (1, 2), "batch_image_size": (32, 64)}
    for key, (quick, full) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    if args.batch_sizes is None:
        args.batch_sizes = [1, 2] if args.quick else []
    if args.devices is None:
        args.devices = ["cpu"] + (["gpu"] if torch.cuda.is_available() else [])
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if not args.keep_malloc_defaults:
        reuse_freed_memory()  # as train() does; every variant runs with it
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    tasks = args.tasks or config_names("task")
    networks = args.networks or config_names("network")
    results, reads = [], None
    for device in args.devices:
        if device == "gpu" and not torch.cuda.is_available():
            results.append({"task": "*", "network": "*", "device": "gpu", "skipped": "no CUDA device on this machine"})
            continue
        for task in [] if args.batched_only else tasks:
            for network in networks:
                print(f"[benchmark] {task} × {network} on {device}", file=sys.stderr, flush=True)
                try:
                    results.append(benchmark_combo(task, network, device, args))
                except Exception as error:  # noqa: BLE001 -- an unsupported combination is reported, not fatal
                    reason = first_line(error, 160) or type(error).__name__
                    results.append({"task": task, "network": network, "device": device, "skipped": reason})
    if args.host_reads and "denoising" in tasks and "skip" in networks:
        with tempfile.TemporaryDirectory() as tmp:
            small = argparse.Namespace(**{**vars(args), "quick": True})
            reads = host_reads_per_step(compose_config(base_overrides("denoising", "skip", "cpu", small, tmp)))
    batched = [
        benchmark_batched(d, args)
        for d in args.devices
        if args.batch_sizes and (d == "cpu" or torch.cuda.is_available())
    ]
    settings = {k: v for k, v in vars(args).items()}
    settings["command"] = "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv)
    report = {
        "machine": machine(),
        "settings": settings,
        "results": results,
        "host_reads_per_step": reads,
        "batched": batched,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.name or ("-".join(args.devices) + ("-quick" if args.quick else ""))
    (out / f"{name}.json").write_text(json.dumps(report, indent=2, default=str))
    (out / f"{name}.md").write_text(markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
