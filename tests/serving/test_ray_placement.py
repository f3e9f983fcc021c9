"""What a replica asks Ray for: the spec's resources, and placement spread over the nodes."""

from __future__ import annotations

from hubserve.serving.ray_placement import actor_options, replica_threads
from hubserve.spec import ResourcesSpec


def test_one_cpu_by_default_spread_over_the_nodes() -> None:
    assert actor_options(None) == {"num_cpus": 1.0, "num_gpus": 0.0, "scheduling_strategy": "SPREAD"}


def test_the_specs_resources() -> None:
    wanted = ResourcesSpec(cpus=2, gpus=1, memory=4 << 30, accelerator_type="L4")
    assert actor_options(wanted) == {"num_cpus": 2.0, "num_gpus": 1.0, "memory": 4 << 30, "accelerator_type": "L4",
                                     "scheduling_strategy": "SPREAD"}


def test_a_replica_runs_as_many_threads_as_whole_cpus_it_asked_for() -> None:
    assert replica_threads(None) == 1
    assert replica_threads(ResourcesSpec(cpus=4)) == 4
    assert replica_threads(ResourcesSpec(cpus=2.5)) == 2  # as Ray sizes OMP_NUM_THREADS
    assert replica_threads(ResourcesSpec(cpus=0.25)) == 1
