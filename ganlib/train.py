"""The training run: train, evaluate every ``eval_every`` steps, report, checkpoint.

``train(config, report)`` is the same code under Ray Tune (``ganlib.tune.train_gan``), in a
notebook, in the tests and on the command line (``python -m ganlib.train``)."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .collapse import OK
from .config import GanConfig
from .data import Dataset
from .evaluate import Evaluator, Measured
from .trainer import CheckpointError, StepStats, Throughput, Trainer, load_checkpoint  # noqa: F401 (re-exported)

# report(metrics, checkpoint_state_or_None). The state is a dict for torch.save.
Reporter = Callable[[dict[str, Any], dict[str, Any] | None], None]
Observer = Callable[[Trainer, dict[str, Any], Evaluator], None]


class _RunningMeans:
    """Means of the step statistics since the last report; summed on device, read once."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, stats: StepStats | dict[str, torch.Tensor]) -> None:
        values = stats if isinstance(stats, dict) else dataclasses.asdict(stats)
        for name, value in values.items():
            if value is not None:
                self.sums[name] = self.sums.get(name, 0) + value.float()
        self.count += 1

    def pop(self) -> dict[str, float]:
        means = {k: (v / self.count).item() for k, v in self.sums.items()}
        self.sums, self.count = {}, 0
        return means


def print_reporter(metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
    shown = {k: v for k, v in metrics.items() if k not in ("reason", "objective")}
    line = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
    print(line + (f"  reason: {metrics['reason']}" if metrics.get("reason") else ""), flush=True)


def train(config: GanConfig | dict[str, Any], report: Reporter = print_reporter,
          resume: dict[str, Any] | None = None, data: Dataset | None = None,
          allow_hparam_change: bool = False, observers: list[Observer] = ()) -> Trainer:
    """Run to ``config.steps`` generator iterations (from ``resume``'s step if given).
    ``observers`` are called as ``observer(trainer, metrics, evaluator)`` at each evaluation,
    before ``report`` (which may not return under Tune when the trial is stopped); with the
    overlap below, with the trainer as it is when the evaluation is concluded.

    With ``eval_overlap`` an evaluation is concluded and reported once its metrics are in, a few
    training steps later (at the latest, at the next evaluation): its checkpoint and its samples
    are those of its own step, kept when it was measured, and a run it stops is put back to that
    step. What is reported, saved and returned is what it would be without it."""
    trainer = Trainer(config, data)
    evaluate = Evaluator(trainer)
    if resume is not None:
        trainer.load_state_dict(resume, allow_hparam_change=allow_hparam_change)
        if "evaluation" in resume:
            evaluate.load_state_dict(resume["evaluation"])
    cfg = trainer.cfg
    means, throughput = _RunningMeans(), Throughput(trainer)

    def finish(pending: PendingEvaluation) -> bool:
        """Conclude, report and checkpoint an evaluation; True if the run stops there."""
        metrics = evaluate.conclude(pending.measured)
        step = pending.measured.step
        stop = cfg.stop_on_collapse and metrics["status"] != OK
        if stop and trainer.step != step:  # trained on while it computed: back to where it was taken
            trainer.load_state_dict(pending.state)
        if cfg.final_eval_samples and (stop or step == cfg.steps):
            metrics.update(evaluate.final_metrics(cfg.final_eval_samples))
        save = step % cfg.checkpoint_every == 0 or step == cfg.steps or step in cfg.checkpoint_steps or stop
        for observe in observers:
            observe(trainer, metrics, evaluate)
        report(metrics, pending.checkpoint(trainer, evaluate) if save else None)
        return stop

    pending: PendingEvaluation | None = None  # an evaluation whose metrics are still computing
    try:
        while trainer.step < cfg.steps:
            means.add(trainer.train_step())
            step = trainer.step
            evaluates = not (step % cfg.eval_every and step != cfg.steps and step not in cfg.checkpoint_steps)
            if pending is not None and (evaluates or pending.measured.ready()):
                if finish(pending):
                    return trainer
                pending = None
            if not evaluates:
                continue
            # The optimizers' live learning rates: under PBT they show the schedule actually applied.
            live = {"opt_lr_d": trainer.opt_d.param_groups[0]["lr"], "opt_lr_g": trainer.opt_g.param_groups[0]["lr"]}
            measured = evaluate.measure({"step": step, "critic_steps": trainer.critic_steps, **means.pop(),
                                         "samples_per_s": throughput.rate(), **live})
            pending = PendingEvaluation(measured, trainer)
            if measured.ready() or step == cfg.steps:
                if finish(pending):
                    return trainer
                pending = None
            throughput.reset()
    finally:
        evaluate.close()
    return trainer


class PendingEvaluation:
    """A measured evaluation awaiting its verdict; while its metrics compute, the trainer's state
    at its step, which its checkpoint holds (and a run it stops goes back to)."""

    def __init__(self, measured: Measured, trainer: Trainer):
        self.measured = measured
        self.state = None if measured.ready() else _state_beside(trainer, measured.networks)

    def checkpoint(self, trainer: Trainer, evaluate: Evaluator) -> dict[str, Any]:
        if self.state is None:
            return checkpoint_state(trainer, evaluate)
        generator = self.measured.networks[0]  # the generator of the evaluation's step
        return {**self.state, "evaluation": evaluate.state_dict(), "samples": checkpoint_samples(trainer, generator)}


def _state_beside(trainer: Trainer, networks: tuple[torch.nn.Module, torch.nn.Module]) -> dict[str, Any]:
    """The trainer's state now, its networks' weights those of the evaluation's copies
    (``networks``: generator, critic), which are this step's and which nothing trains (the
    evaluation runs them in eval mode under no_grad), instead of copied a second time."""
    state = trainer.state_dict()
    del state["generator"], state["critic"]  # views of the live weights: not copied
    return {**copy.deepcopy(state), "generator": networks[0].state_dict(), "critic": networks[1].state_dict()}


SAMPLES_IN_CHECKPOINT = 1000


def checkpoint_state(trainer: Trainer, evaluate: Evaluator) -> dict[str, Any]:
    """What a checkpoint holds: the trainer's full state, the evaluation state (score history,
    detector, best-score generator weights) and a few generated samples to plot (so whoever
    reads the checkpoint can show the generator without building it)."""
    return {**trainer.state_dict(), "evaluation": evaluate.state_dict(), "samples": checkpoint_samples(trainer)}


def checkpoint_samples(trainer: Trainer, generator: torch.nn.Module | None = None) -> torch.Tensor:
    return trainer.sample(min(trainer.cfg.eval_samples, SAMPLES_IN_CHECKPOINT), generator=generator)


# -- command line ------------------------------------------------------------------------------
def _field_parser(annotation: str) -> Callable[[str], Any]:
    hint = annotation.replace(" ", "")
    if hint.startswith("int"):
        return int
    if hint.startswith("float"):
        return float
    if hint.startswith("bool"):
        return lambda s: s.lower() in ("1", "true", "yes")
    return str


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ganlib.train", description=__doc__.splitlines()[0])
    for f in dataclasses.fields(GanConfig):
        if f.name == "extra":
            continue
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=_field_parser(str(f.type)),
                            default=None, help=f"(default: {f.default!r}, None = family default)")
    parser.add_argument("--out", type=Path, help="write the final checkpoint and metrics.jsonl here")
    parser.add_argument("--resume", type=Path, help="continue from this checkpoint file")
    args = vars(parser.parse_args(argv))
    out, resume = args.pop("out"), args.pop("resume")
    values = {k: v for k, v in args.items() if v is not None}
    try:
        config = GanConfig.from_dict(values)  # a bad value stops here, before anything is written
    except ValueError as err:
        parser.error(str(err))

    history: list[dict[str, Any]] = []

    def report(metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        print_reporter(metrics, state)
        history.append(metrics)

    trainer = train(config, report, resume=load_checkpoint(resume) if resume else None)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        torch.save(trainer.state_dict(), out / "checkpoint.pt")
        (out / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in history))
        print(f"checkpoint and metrics written to {out}")
    print("config: " + json.dumps(trainer.cfg.to_dict()))
    return 0



if __name__ == "__main__":
    sys.exit(main())
