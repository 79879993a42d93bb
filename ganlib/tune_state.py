"""What a resumed sweep meets in Tune's experiment state (Ray Tune 2.60, read in its sources):
state files a killed driver left truncated, and a restore that fails without saying so.

``set_aside_unreadable_state`` runs before every restore; ``restoring`` wraps the restored fit,
and the sweep's logger calls ``check_restored`` from its ``setup``. No torch here: the sweep's
command line imports ``RestoreFailed`` before anything heavy.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

logger = logging.getLogger(__name__)


# Tune's experiment state files, one of each kind per driver session (restored: each kind's newest by name)
TUNE_STATE_FILES = ("experiment_state-*.json", "callback-states-*.pkl", "searcher-state-*.pkl",
                    "search_gen_state-*.json", "basic-variant-state-*.json")


def set_aside_unreadable_state(experiment_path: str) -> list[str]:
    """Before a restore: each kind of Tune state file whose newest copies cannot be read is
    renamed aside (``<name>.unreadable``), so Tune restores from the newest readable one.

    A driver SIGKILLed while Tune copies its state from the driver's staging folder into the
    storage path leaves truncated files there (seen: a 0-byte ``callback-states-*.pkl``), and
    Tune restores each kind's newest file by name, unchecked: ``TuneController.resume`` meets an
    EOFError, logs it, and the restored run has no trials at all. Returns the names set aside."""
    import fnmatch

    import pyarrow.fs as pafs
    from ray import cloudpickle
    from ray.train._internal.storage import get_fs_and_path
    from ray.tune.utils.serialization import _loads_with_cloudpickle

    fs, root = get_fs_and_path(experiment_path)
    try:
        names = [i.base_name for i in fs.get_file_info(pafs.FileSelector(root)) if i.type == pafs.FileType.File]
    except OSError:  # no such folder (yet)
        return []
    aside = []
    for pattern in TUNE_STATE_FILES:
        load = _loads_with_cloudpickle if pattern.startswith("experiment_state") else cloudpickle.loads
        for name in sorted(fnmatch.filter(names, pattern), reverse=True):
            path = f"{root}/{name}"
            try:
                with fs.open_input_stream(path) as stream:
                    load(stream.readall())
                break  # the newest readable one: Tune restores from it
            except Exception:  # noqa: BLE001 - truncated or damaged: any failure to load it
                fs.move(path, f"{path}.unreadable")
                aside.append(name)
                logger.warning("Tune state file %s cannot be read (a driver killed while writing it?): set aside "
                               "as %s.unreadable; restoring from the one before", path, name)
    return aside


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
    except RestoreFailed:
        raise
    except Exception as err:
        if key in _RESTORING and errors:  # failed before the run was set up, after a failed restore
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
