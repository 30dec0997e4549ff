"""Shared fixtures of the Ray tests: one small local cluster per test module."""
import sys

import pytest


@pytest.fixture(scope="module")
def ray_cluster(request):
    """A local Ray cluster of 2 CPUs without dashboard, shut down after the module's tests. The
    test module is pickled by value, so the workers need not import it."""
    ray = pytest.importorskip("ray")
    ray.cloudpickle.register_pickle_by_value(sys.modules[request.module.__name__])
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()
