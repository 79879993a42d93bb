"""Declarative hyperparameter search spaces, read from YAML and run as Optuna define-by-run.

A space file (``search_spaces/<name>.yaml``)::

    name: wgan_clip
    description: free text
    fixed:                    # GanConfig fields every trial gets
      loss: wgan
    params:                   # searched, in this order
      clip:      {type: loguniform, low: 1.0e-3, high: 1.0}
      n_critic:  {type: int, low: 1, high: 10}          # int also takes log: true, step: 2
      optimizer: {type: categorical, choices: [rmsprop, adam, sgd]}
      beta1:     {type: uniform, low: 0.0, high: 0.9, when: {optimizer: adam}}
    start:                    # enqueued before any sampling: every ACTIVE searched param, nothing else
      - {clip: 0.01, n_critic: 5, optimizer: rmsprop}

Types: uniform (optional step), loguniform, int (optional log, step), categorical. ``when: {p: v}`` or
``{p: [v, w]}`` names a categorical param defined earlier or a fixed field; a param whose condition is
false is absent from the trial config (GanConfig rejects settings the algorithm would ignore).

A param named other than a GanConfig field says which field it sets: ``norm_gp: {field: d_norm, ...}``.
Optuna's distributions are fixed per name, so a field whose allowed values depend on another choice
is written as several params with disjoint conditions, each setting the same field.
Write floats with a dot or digits before the exponent: YAML 1.1 reads ``1e-3`` as a string.

With Ray Tune::

    space = load_space("wgan_clip")
    OptunaSearch(space=space.define_by_run, metric="w1", mode="min",
                 points_to_evaluate=space.start_points())
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml

from .config import ConfigError, GanConfig

SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"
FIELDS = tuple(f.name for f in dataclasses.fields(GanConfig) if f.name != "extra")
TOP_KEYS = ("name", "description", "fixed", "params", "start")
# Fields the sweep sets for every trial from its flags and plan (how long, where, on what data,
# which checkpoints): a space setting one would run its trials under values the scheduler, the
# pre-flight and the report do not know. A space says what is trained.
SWEEP_OWNED = {"dataset": "--dataset", "data_root": "--data-root", "seed": "--seed", "steps": "--steps",
               "eval_every": "--eval-every", "score_every": "--score-every", "eval_samples": "--eval-samples",
               "device": "--device", "eval_overlap": "--eval-overlap", "inception_weights": "--inception-weights",
               "stop_on_collapse": "--no-collapse-stop", "checkpoint_every": "the sweep's plan",
               "checkpoint_steps": "the sweep's plan (its rungs)", "final_eval_samples": "the confirmation stage",
               "download": "the pre-flight (never at run time)"}
PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
TYPE_KEYS = {
    "uniform": ("low", "high", "step"),
    "loguniform": ("low", "high"),
    "int": ("low", "high", "step", "log"),
    "categorical": ("choices",),
}
SCALARS = (str, int, float, bool, type(None))  # what an Optuna CategoricalDistribution can hold


class SpaceError(ValueError):
    """A search-space file is invalid; the message names the file, the key and what is allowed."""

    def __init__(self, path: Path | str, key: str, problem: str):
        self.path, self.key, self.problem = str(path), key, problem
        super().__init__(f"search space {path}: {key}: {problem}")

    def __reduce__(self):
        return type(self), (self.path, self.key, self.problem)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _on_grid(offset: float, step: float) -> bool:
    k = offset / step
    return abs(k - round(k)) <= 1e-9 * max(1.0, abs(k))


def _string_hint(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    try:
        float(value)
    except ValueError:
        return ""
    return " (YAML 1.1 reads numbers like 1e-3 as strings: write 1.0e-3)"


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple = ()
    when: dict[str, tuple] = field(default_factory=dict)  # controlling param -> allowed values
    field: str = ""  # the GanConfig field it sets ("" : its own name)

    @property
    def target(self) -> str:
        return self.field or self.name

    def active(self, values: dict[str, Any]) -> bool:
        # A controlling param that is itself inactive (absent) makes this one inactive too.
        return all(name in values and values[name] in allowed for name, allowed in self.when.items())

    def suggest(self, trial: Any) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.name, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def contains(self, value: Any) -> bool:
        if self.type == "categorical":
            return any(value == c and type(value) is type(c) for c in self.choices)
        if not _is_number(value) or (self.type == "int" and not isinstance(value, int)):
            return False
        return self.low <= value <= self.high and (self.step is None or _on_grid(value - self.low, self.step))

    def describe(self) -> str:
        if self.type == "categorical":
            return "one of " + ", ".join(map(repr, self.choices))
        kind = "an integer" if self.type == "int" else "a number"
        return (f"{kind} in [{self.low}, {self.high}]" + (f" on a grid of step {self.step}" if self.step else "")
                + (" (log scale)" if self.log else ""))

    def condition(self) -> str:
        return " and ".join(f"{k} in {list(v)}" for k, v in self.when.items())

    def to_dict(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"type": self.type, **({"field": self.field} if self.field else {})}
        if self.type == "categorical":
            spec["choices"] = list(self.choices)
        else:
            spec.update(low=self.low, high=self.high)
            if self.step is not None:
                spec["step"] = self.step
            if self.log and self.type == "int":
                spec["log"] = True
        if self.when:
            spec["when"] = {k: list(v) for k, v in self.when.items()}
        return spec


@dataclass(frozen=True)
class SearchSpace:
    name: str
    description: str
    fixed: dict[str, Any]
    params: tuple[Param, ...]
    start: tuple[dict[str, Any], ...] = ()
    path: Path | None = None

    @property
    def searched(self) -> tuple[str, ...]:
        """The params' names (Optuna's parameter names)."""
        return tuple(p.name for p in self.params)

    @property
    def fields(self) -> tuple[str, ...]:
        """The config fields the params set, in order, each once."""
        return tuple(dict.fromkeys(p.target for p in self.params))

    def to_config(self, values: dict[str, Any]) -> dict[str, Any]:
        """Values keyed by param name -> keyed by config field."""
        targets = {p.name: p.target for p in self.params}
        return {targets.get(k, k): v for k, v in values.items()}

    def field_param(self, name: str) -> Param:
        """One param describing a searched field (for plots): its aliases' union."""
        params = [p for p in self.params if p.target == name]
        if not params:
            raise KeyError(f"{name!r} is not searched in space {self.name!r}; searched: {', '.join(self.fields)}")
        if len(params) == 1:
            return params[0]
        if all(p.type == "categorical" for p in params):
            choices = tuple(dict.fromkeys(c for p in params for c in p.choices))
            return Param(name, "categorical", choices=choices)
        return Param(name, params[0].type, min(p.low for p in params), max(p.high for p in params),
                     log=all(p.log for p in params))

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(f"{name!r} is not searched in space {self.name!r}; searched: {', '.join(self.searched)}")

    def is_log(self, name: str) -> bool:
        return self.param(name).log

    def define_by_run(self, trial: Any) -> dict[str, Any]:
        """Suggest the active params in order; return the fixed values, which Ray's OptunaSearch
        merges into the trial config as constants (they are not Optuna params)."""
        values = dict(self.fixed)
        for p in self.params:
            if p.active(values):
                values[p.name] = p.suggest(trial)
        return dict(self.fixed)

    def start_points(self) -> list[dict[str, Any]]:
        """Searched values only, for ``OptunaSearch(points_to_evaluate=...)``."""
        return [dict(point) for point in self.start]

    def sample_configs(self, n: int, seed: int = 0) -> list[dict[str, Any]]:
        """``n`` full trial configs (fixed + suggested), start points first: what a sweep would try
        before any result comes back (trials are never told, so TPE samples from its prior)."""
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
        for point in self.start:
            study.enqueue_trial(point)
        configs = []
        for _ in range(n):
            trial = study.ask()
            fixed = self.define_by_run(trial)
            configs.append({**fixed, **self.to_config(trial.params)})
        return configs

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "fixed": dict(self.fixed),
                "params": {p.name: p.to_dict() for p in self.params}, "start": self.start_points()}

    def corner_configs(self) -> list[dict[str, Any]]:
        """Trial configs (fixed + searched fields) at every corner of the space (``_corners``)."""
        return [self.to_config(values) for values in self._corners()]

    def _corners(self):
        """Every combination of categorical choices, numbers all at their low end, then all at their
        high end: each activity pattern GanConfig could object to, and both range ends."""
        def walk(i: int, values: dict[str, Any], end: int):
            if i == len(self.params):
                yield values
                return
            p = self.params[i]
            if not p.active(values):
                yield from walk(i + 1, values, end)
                return
            for v in p.choices if p.type == "categorical" else ((p.low, p.high)[end],):
                yield from walk(i + 1, {**values, p.name: v}, end)

        for end in (0, 1):
            yield from walk(0, dict(self.fixed), end)


def available() -> list[str]:
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def load_space(path_or_name: str | os.PathLike) -> SearchSpace:
    """Load and fully validate a space: a name resolves to ``search_spaces/<name>.yaml`` at the
    repository root; anything path-like (a Path, a slash, a .yaml suffix) is used as is."""
    text = str(path_or_name)
    is_path = isinstance(path_or_name, os.PathLike) or os.sep in text or "/" in text
    path = Path(text) if is_path or text.endswith((".yaml", ".yml")) else SPACES_DIR / f"{text}.yaml"
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise SpaceError(path, "(file)", f"no such file; shipped spaces: {', '.join(available())}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpaceError(path, "(yaml)", f"not valid YAML{where}: {what}") from None
    return _parse(raw, path)


class _UniqueKeyLoader(yaml.SafeLoader):
    # PyYAML keeps the last of two equal keys silently: a duplicated param would lose its first spec.
    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        for i, k in enumerate(keys):
            if k in keys[:i]:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {k!r}", node.start_mark)
        return super().construct_mapping(node, deep)


def _parse(raw: Any, path: Path) -> SearchSpace:
    if not isinstance(raw, dict):
        raise SpaceError(path, "(top level)", f"must be a mapping with keys {', '.join(TOP_KEYS)}")
    for key in raw:
        if key not in TOP_KEYS:
            raise SpaceError(path, str(key), f"unknown top-level key; allowed: {', '.join(TOP_KEYS)}")
    name, description = raw.get("name", path.stem), raw.get("description", "")
    if not isinstance(name, str) or not name:
        raise SpaceError(path, "name", "a non-empty string")
    if not isinstance(description, str):
        raise SpaceError(path, "description", "a string")
    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise SpaceError(path, "fixed", "a mapping {GanConfig field: value}")
    for key in fixed:
        if key not in FIELDS:
            raise SpaceError(path, f"fixed.{key}", f"not a GanConfig field; allowed: {', '.join(FIELDS)}")
        if key in SWEEP_OWNED:
            raise SpaceError(path, f"fixed.{key}", f"set by the sweep ({SWEEP_OWNED[key]}), not by a space")
    specs = raw.get("params")
    if not isinstance(specs, dict) or not specs:
        raise SpaceError(path, "params", "a non-empty mapping {GanConfig field: distribution}")
    params: dict[str, Param] = {}
    for name_, spec in specs.items():
        params[name_] = _parse_param(path, str(name_), spec, fixed, params, list(specs))
    space = SearchSpace(name, description, dict(fixed), tuple(params.values()), path=path)
    _check_corners(space)
    start = raw.get("start") or []
    if not isinstance(start, list):
        raise SpaceError(path, "start", "a list of points {param: value}")
    return dataclasses.replace(space, start=tuple(_parse_start(space, i, p) for i, p in enumerate(start)))


def _parse_param(path: Path, name: str, spec: Any, fixed: dict, earlier: dict[str, Param],
                 names: list) -> Param:
    key = f"params.{name}"
    if not PARAM_NAME.fullmatch(name):  # Tune nests a name with '/', Optuna keys trials by it
        raise SpaceError(path, key, "a name of letters, digits and underscores, not starting with a digit")
    target = spec.get("field", name) if isinstance(spec, dict) else name
    if target not in FIELDS:
        where = f"{key}.field" if target != name else key
        raise SpaceError(path, where, f"not a GanConfig field; allowed: {', '.join(FIELDS)} (or another name "
                         "with `field:` naming one)")
    if target in SWEEP_OWNED:
        where = f"{key}.field" if target != name else key
        raise SpaceError(path, where, f"set by the sweep ({SWEEP_OWNED[target]}), not searched by a space")
    if target in fixed or name in fixed:
        raise SpaceError(path, key, "also set under fixed; a parameter is either fixed or searched")
    if name != target and name in FIELDS:  # the trial's config would hold both under one name
        raise SpaceError(path, key, f"names the GanConfig field {name!r} but sets {target!r}: an alias (with "
                         "`field:`) must not be another field's name")
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind not in TYPE_KEYS:
        raise SpaceError(path, f"{key}.type", f"{kind!r} is not a type; allowed: {', '.join(TYPE_KEYS)}")
    allowed = ("type", "when", "field", *TYPE_KEYS[kind])
    for k in spec:
        if k not in allowed:
            raise SpaceError(path, f"{key}.{k}", f"unknown key for type {kind}; allowed: {', '.join(allowed)}")
    when = _parse_when(path, key, spec.get("when"), fixed, earlier, names)
    if kind == "categorical":
        choices = spec.get("choices")
        if (not isinstance(choices, list) or not choices or not all(isinstance(c, SCALARS) for c in choices)
                or len({repr(c) for c in choices}) != len(choices)
                or any(a == b for i, a in enumerate(choices) for b in choices[i + 1:])):  # 1, 1.0, True: one to Optuna
            raise SpaceError(path, f"{key}.choices", "a non-empty list of distinct strings, numbers or booleans")
        return Param(name, kind, choices=tuple(choices), when=when, field="" if target == name else target)
    integer = kind == "int"
    low, high = (_number(path, f"{key}.{b}", spec.get(b), integer) for b in ("low", "high"))
    if low >= high:
        raise SpaceError(path, f"{key}.high", f"{high} must be greater than low ({low})")
    log = kind == "loguniform" or spec.get("log", False)
    if not isinstance(log, bool):
        raise SpaceError(path, f"{key}.log", "true or false")
    if log and (low < 1 if integer else low <= 0):
        raise SpaceError(path, f"{key}.low", f"{low} is not allowed on a log scale: must be "
                         + (">= 1 for an int" if integer else "> 0"))
    step = spec.get("step")
    if step is not None:
        step = _number(path, f"{key}.step", step, integer)
        if step <= 0 or log or not _on_grid(high - low, step):
            raise SpaceError(path, f"{key}.step", "a positive number that divides high - low (not with log)")
    if not integer:
        low, high, step = float(low), float(high), None if step is None else float(step)
    return Param(name, kind, low, high, step, log, when=when, field="" if target == name else target)


def _number(path: Path, key: str, value: Any, integer: bool) -> Any:
    if not (isinstance(value, int) if integer else _is_number(value)) or isinstance(value, bool):
        kind = "an integer" if integer else "a finite number"
        got = "missing" if value is None else f"{value!r} is not allowed"
        raise SpaceError(path, key, f"{got}: must be {kind}{_string_hint(value)}")
    return value


def _parse_when(path: Path, key: str, when: Any, fixed: dict, earlier: dict[str, Param],
                names: list) -> dict[str, tuple]:
    if when is None:
        return {}
    if not isinstance(when, dict) or not when:
        raise SpaceError(path, f"{key}.when", "a mapping {param: value} or {param: [values]}")
    out = {}
    for cond, allowed in when.items():
        ckey = f"{key}.when.{cond}"
        values = tuple(allowed) if isinstance(allowed, list) else (allowed,)
        if not values or not all(isinstance(v, SCALARS) for v in values):
            raise SpaceError(path, ckey, "a value or a non-empty list of values")
        if cond in earlier:
            p = earlier[cond]
            if p.type != "categorical":
                raise SpaceError(path, ckey, "conditions may only name categorical parameters or fixed fields")
            for v in values:
                if not p.contains(v):
                    raise SpaceError(path, ckey, f"{v!r} is never chosen; allowed: {p.describe()}")
        elif cond not in fixed:
            where = "defined later in params" if cond in names else "neither a parameter nor a fixed field"
            raise SpaceError(path, ckey, f"{cond!r} is {where}; allowed: parameters defined earlier "
                             f"({', '.join(earlier) or 'none'}) or fixed fields ({', '.join(fixed) or 'none'})")
        out[cond] = values
    return out


def _check_corners(space: SearchSpace) -> None:
    """Build a GanConfig for every corner so that a conditional param lacking its `when`, a fixed
    value GanConfig rejects or a range end outside what GanConfig allows fails at load time."""
    never_active = list(space.searched)
    for config in space._corners():
        never_active = [n for n in never_active if n not in config]
        chosen = {p.name: config[p.name] for p in space.params if p.type == "categorical" and p.name in config}
        active = [p for p in space.params if p.name in config]
        for p in active:
            twins = [q.name for q in active if q.target == p.target and q is not p]
            if twins:
                raise SpaceError(space.path, f"params.{p.name}.when", f"{p.name} and {twins[0]} both set field "
                                 f"{p.target!r} in a trial with {chosen}; allowed: conditions that exclude each other")
        try:
            GanConfig.from_dict(space.to_config(config))
        except ConfigError as exc:
            setter = next((p.name for p in active if p.target == exc.field), None)
            key = (f"fixed.{exc.field}" if exc.field in space.fixed
                   else f"params.{setter}" if setter else "fixed")
            fix = ("add or fix its `when` condition or its range" if key.startswith("params.")
                   else "change the fixed value")
            raise SpaceError(space.path, key, "GanConfig rejects a trial of this space"
                             + (f" with {chosen}" if chosen else "") + f": {exc}; {fix}") from None
    if never_active:
        p = space.param(never_active[0])
        raise SpaceError(space.path, f"params.{p.name}.when", f"{p.condition()} is never true; "
                         "allowed: a condition some trial can meet")


def _parse_start(space: SearchSpace, i: int, point: Any) -> dict[str, Any]:
    key, path = f"start[{i}]", space.path
    if not isinstance(point, dict):
        raise SpaceError(path, key, "a mapping {searched param: value}")
    for k in point:
        if k not in space.searched:
            why = "fixed for every trial: leave it out" if k in space.fixed else "not a searched parameter"
            raise SpaceError(path, f"{key}.{k}", f"{why}; allowed: {', '.join(space.searched)}")
    values, out = dict(space.fixed), {}
    for p in space.params:
        pkey = f"{key}.{p.name}"
        if not p.active(values):
            if p.name in point:
                raise SpaceError(path, pkey, f"inactive in this point (only when {p.condition()}): leave it out")
            continue
        if p.name not in point:
            # Optuna would sample a missing value at random: the point would not be the one written.
            raise SpaceError(path, pkey, "missing: a start point lists every parameter active in it")
        value = point[p.name]
        if not p.contains(value):
            raise SpaceError(path, pkey, f"{value!r} is outside the distribution; allowed: {p.describe()}"
                             + _string_hint(value))
        # Optuna returns an enqueued value unconverted: a YAML 10 would reach the trial as an int.
        out[p.name] = values[p.name] = float(value) if p.type in ("uniform", "loguniform") else value
    try:
        GanConfig.from_dict(space.to_config(values))
    except ConfigError as exc:
        setter = next((p.name for p in space.params if p.target == exc.field and p.name in values), exc.field)
        raise SpaceError(path, f"{key}.{setter}", str(exc)) from None
    return out
