"""What a resumed sweep meets in Tune's experiment state (Ray Tune 2.60, read in its sources):
state files a killed driver left truncated, staged copies a long-lived Ray session keeps, and a
restore that fails without saying so.

Before every restore: ``set_aside_unreadable_state``, then ``discard_staged_state``; around the
restored fit, ``restoring``, whose failure the sweep's logger reports from its ``setup`` through
``check_restored``. No torch here: the sweep's command line imports ``RestoreFailed`` before
anything heavy.
"""

from __future__ import annotations

import fnmatch
import glob
import logging
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)


# Tune's experiment state files: one of each kind per driver session, named for the session's start
# ("experiment_state-2026-12-06_04-52-18.json"); a restore takes each kind's newest by name.
TUNE_STATE_FILES = ("experiment_state-*.json", "callback-states-*.pkl", "searcher-state-*.pkl",
                    "search_gen_state-*.json", "basic-variant-state-*.json")
# Every session saves its search algorithm's state: the basic variant generator's, or a searcher's
# with its generator's. A session without it restores without an error, and runs its trials again.
_BASIC_VARIANTS, _SEARCHER = ("basic-variant-state-*.json",), ("search_gen_state-*.json", "searcher-state-*.pkl")


def _state_file(name: str) -> tuple[str, str] | None:
    """(kind, driver session) of a Tune state file, the kind being its pattern; None for any
    other file."""
    for pattern in TUNE_STATE_FILES:
        if fnmatch.fnmatch(name, pattern):
            prefix, suffix = pattern.split("*")
            return pattern, name[len(prefix):-len(suffix)]
    return None


def _loads(name: str, data: bytes) -> None:
    from ray import cloudpickle
    from ray.tune.utils.serialization import _loads_with_cloudpickle

    (_loads_with_cloudpickle if name.startswith("experiment_state") else cloudpickle.loads)(data)


def set_aside_unreadable_state(experiment_path: str) -> list[str]:
    """Before a restore: Tune's state files of every driver session newer than the newest whole
    one (every file loads; no kind missing that the session before had, nor its search algorithm's
    state) are renamed aside
    (``<name>.unreadable``, or ``<name>.set-aside`` for a readable file of such a session), so
    Tune restores one session's state, whole. Returns the names set aside.

    A driver SIGKILLed while Tune copies its state from the driver's staging folder into the
    storage path leaves truncated files there (seen: a 0-byte ``callback-states-*.pkl``), and
    Tune restores each kind's newest file by name, unchecked: ``TuneController.resume`` meets an
    EOFError, logs it, and the restored run has no trials at all. Setting aside only the file
    that fails would restore that kind from an older session beside the others' newer state (an
    experiment state without the trials its searcher has already suggested).

    A file cut short or missing is first restored from the whole copy its driver staged on this
    machine (``_staged_copy``), where there is one: a stage's first session has no session before
    it, and setting it aside would leave nothing to restore (met in CI: the confirmation stage's
    basic variant generator state cut short by the kill)."""
    listed = _files(experiment_path)
    if listed is None:
        return []
    fs, root, names = listed
    sessions: dict[str, dict[str, str]] = {}  # session -> {file name: kind}
    for name in names:
        if (found := _state_file(name)) is not None:
            sessions.setdefault(found[1], {})[name] = found[0]
    aside, ordered = [], sorted(sessions, reverse=True)
    for i, session in enumerate(ordered):
        # a kind the session before had (and the experiment state, which every session writes first)
        # that this one lacks: its copy never reached the storage path
        before = set(sessions[ordered[i + 1]].values()) if i + 1 < len(ordered) else set()
        kinds = set(sessions[session].values())
        needed = before | {TUNE_STATE_FILES[0]} | set(
            _BASIC_VARIANTS if _BASIC_VARIANTS[0] in kinds else _SEARCHER)
        missing = {kind.replace("*", session): kind for kind in needed - kinds}
        unreadable = []
        for name in sessions[session]:
            try:
                with fs.open_input_stream(f"{root}/{name}") as stream:
                    _loads(name, stream.readall())
            except Exception:  # noqa: BLE001 - truncated or damaged: any failure to load it
                unreadable.append(name)
        for name in [*unreadable, *missing]:  # the killed driver's own whole copy, where this machine has it
            if (data := _staged_copy(Path(root).name, name)) is not None:
                with fs.open_output_stream(f"{root}/{name}") as out:
                    out.write(data)
                sessions[session][name] = missing.pop(name, None) or sessions[session][name]
                unreadable = [n for n in unreadable if n != name]
                logger.warning("Tune state file %s in %s was cut short or missing (a driver killed while copying "
                               "it?): restored from the whole copy its driver staged on this machine", name, root)
        problems = [f"no {kind} file" for kind in sorted(missing.values())]
        if not unreadable and not problems:
            break  # the newest whole session: Tune restores from it
        for name in sorted(sessions[session]):
            suffix = "unreadable" if name in unreadable else "set-aside"
            fs.move(f"{root}/{name}", f"{root}/{name}.{suffix}")
            aside.append(name)
        logger.warning("Tune state of driver session %s in %s is not whole (%s: a driver killed while writing it?): "
                       "its files are set aside; restoring from the session before", session, root,
                       ", ".join(sorted(unreadable) + problems))
    return aside


def _files(experiment_path: str):
    """(filesystem, root, names of the files in it) of a Tune run's folder; None if there is none."""
    import pyarrow.fs as pafs
    from ray.train._internal.storage import get_fs_and_path

    fs, root = get_fs_and_path(experiment_path)
    try:
        return fs, root, [i.base_name for i in fs.get_file_info(pafs.FileSelector(root))
                          if i.type == pafs.FileType.File]
    except OSError:  # no such folder (yet)
        return None


def start_afresh_without_state(experiment_path: str) -> bool:
    """Before a restore, after ``set_aside_unreadable_state``: a Tune run with its ``tuner.pkl``
    but no experiment state left (its driver was killed before Tune saved a whole one) cannot be
    restored (Tune fails, and would on every resume): its ``tuner.pkl`` is set aside, so that the
    stage runs again from the start. Returns whether it was."""
    listed = _files(experiment_path)
    if listed is None:
        return False
    fs, root, names = listed
    if "tuner.pkl" not in names or any(fnmatch.fnmatch(n, TUNE_STATE_FILES[0]) for n in names):
        return False
    fs.move(f"{root}/tuner.pkl", f"{root}/tuner.pkl.set-aside")
    logger.warning("Tune run %s has no whole experiment state (its driver was killed before Tune saved one): "
                   "it starts again from the beginning", root)
    return True


def _staged_copy(experiment_dir_name: str, name: str) -> bytes | None:
    """A whole copy of the Tune state file ``name`` from a driver staging folder of this machine's
    Ray sessions, or None. Tune writes its state there first, atomically (a temporary file renamed),
    then copies it into the storage path, which is not atomic: a driver killed during that copy
    leaves a whole copy in its staging folder (the same file name: the name holds its driver
    session), on the machine it ran on, where a resumed sweep's driver usually runs too."""
    import ray

    if not ray.is_initialized():
        return None
    from ray.train.constants import _get_ray_train_session_dir

    ray_temp = Path(_get_ray_train_session_dir()).parent.parent  # <temp>/session_*/artifacts
    pattern = f"session_*/artifacts/*/{glob.escape(experiment_dir_name)}/driver_artifacts/{glob.escape(name)}"
    for path in sorted(ray_temp.glob(pattern), reverse=True):
        try:
            data = path.read_bytes()
            _loads(name, data)
        except Exception:  # noqa: BLE001 - not whole either
            continue
        return data
    return None


def discard_staged_state(experiment_dir_name: str) -> list[str]:
    """Before a restore in a Ray session that already ran this experiment (a long-lived cluster):
    delete the copies of Tune's state files in the driver's staging folders, so the restore reads
    the storage path's (checked by ``set_aside_unreadable_state``). Tune reads the searcher's and
    callbacks' state from staging after copying the storage path's files over it, and that copy
    adds and overwrites but never removes: a file set aside in storage would still be read there.
    Returns the paths deleted."""
    import ray

    if not ray.is_initialized():
        return []
    from ray.train.constants import _get_ray_train_session_dir

    deleted = []
    for staging in Path(_get_ray_train_session_dir()).glob(f"*/{glob.escape(experiment_dir_name)}/driver_artifacts"):
        for path in staging.iterdir():
            if path.is_file() and _state_file(path.name) is not None:
                path.unlink()
                deleted.append(str(path))
    return deleted


class RestoreFailed(RuntimeError):
    """Tune could not restore a resumed Tune run: no trial of it ran, nothing was saved."""


_RESTORING: dict[str, list[str]] = {}  # key of a Tune run being restored -> errors Tune logged meanwhile


class _TuneErrors(logging.Handler):
    def __init__(self, into: list[str]):
        super().__init__(logging.ERROR)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        self.into.append(f"{type(error).__name__}: {error}" if error else record.getMessage())


@contextmanager
def restoring(key: str, what: str):
    """Around ``Tuner.restore(...).fit()`` of ``what``, the Tune run whose callback calls
    ``check_restored(key, what)`` from its ``setup``: a restore that fails raises
    ``RestoreFailed`` naming Tune's error, before any trial starts or any state is saved.

    Tune 2.60 catches any exception while it restores (``TuneController.__init__``), logs
    "Failed to restore the run state" and goes on as if the run were new. With a searcher
    restored before the failure, ``tune.run`` then trips an ``AssertionError`` (the searcher
    already holds its experiment): that is turned into ``RestoreFailed``. With the basic variant
    generator it runs afresh: no trials if that generator was restored (an empty result, and a
    state file saved over the sweep's), every trial again if not; the callback's ``setup``, which
    Tune calls after restoring and before the first trial or save, stops it."""
    errors = _RESTORING[key] = []
    handler = _TuneErrors(errors)
    tune_logger = logging.getLogger("ray.tune.execution.tune_controller")
    tune_logger.addHandler(handler)
    try:
        yield
    except Exception as err:
        # failed before the run was set up (check_restored drops the key), after a failed restore
        if key in _RESTORING and errors:
            raise RestoreFailed(_restore_failure(what, errors)) from err
        raise
    finally:
        tune_logger.removeHandler(handler)
        _RESTORING.pop(key, None)


def _restore_failure(what: str, errors: list[str]) -> str:
    return f"Tune could not restore {what} ({'; '.join(errors)}); no trial ran and nothing was saved"


def check_restored(key: str, what: str) -> None:
    """In the ``setup`` of the callback ``restoring`` names (Tune's restore is over by then):
    ``RestoreFailed`` if Tune logged that the restore failed. A restore that found no state
    for some part (a callback state file set aside as truncated) is not a failure."""
    errors = _RESTORING.pop(key, None)
    if errors:
        raise RestoreFailed(_restore_failure(what, errors))
