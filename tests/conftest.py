import os

import pytest
import torch

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def tiny():
    """A small, fast ring8 config for structural tests (not for learning behaviour)."""
    return dict(dataset="ring8", width=16, depth=2, batch_size=32, steps=6, eval_every=2, eval_samples=256,
                device="cpu")


@pytest.fixture(scope="session")
def local_ray():
    """One private local Ray instance for the in-process Tune tests. ``address="local"``: a
    plain ``ray.init()`` would join whatever cluster /tmp/ray/ray_current_cluster names (another
    test's head, a stale one), where ``num_cpus`` is refused."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
