"""A local Ray on 127.0.0.1 shared by the tests in this folder (starting one costs seconds)."""

from __future__ import annotations


import pytest

from tests.conftest import ROOT

@pytest.fixture(scope="session")
def ray_local():
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=4, _node_ip_address="127.0.0.1", include_dashboard=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}}, configure_logging=False)
    yield ray
    ray.shutdown()
