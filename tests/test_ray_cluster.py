"""Rollout workers on a Ray cluster of two nodes (issue 25): actors on both nodes, the same training as no workers."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import Any

import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback

from arsm_rl import ARSM

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray (pip install -e '.[ray]')"),
]
SMALL = dict(policy_kwargs=dict(net_arch=[16]), n_steps=64, seed=0)


@pytest.fixture
def two_nodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A local cluster of two Ray nodes with one CPU each, joined through ``RAY_ADDRESS`` as a user's script would."""
    import ray
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    try:
        yield ray
    finally:
        ray.shutdown()
        cluster.shutdown()


class CpusInUse(BaseCallback):
    """Reads, during the second update's collection (the workers are up), the cluster's nodes and its free CPUs."""

    def __init__(self, ray: Any) -> None:
        super().__init__()
        self.ray = ray
        self.seen: tuple[int, float, float] | None = None

    def _on_step(self) -> bool:
        if self.num_timesteps == 65:
            ray = self.ray
            self.seen = (len(ray.nodes()), ray.cluster_resources()["CPU"], ray.available_resources().get("CPU", 0.0))
        return True


def test_workers_on_two_ray_nodes_train_as_without_workers(two_nodes: Any) -> None:
    reference = ARSM("MlpPolicy", "CartPole-v1", **SMALL).learn(192)
    watch = CpusInUse(two_nodes)
    shared = ARSM("MlpPolicy", "CartPole-v1", n_rollout_workers=2, rollout_backend="ray", **SMALL)
    shared.start_rollout_workers()  # ready from the first update on
    shared.learn(192, callback=watch)
    assert shared.last_update is not None and shared.last_update.rollouts.worker_rollouts > 0
    # two nodes of one CPU each and no CPU free: one actor (one CPU each) on each node
    assert watch.seen == (2, 2.0, 0.0)
    for a, b in zip(reference.policy.parameters(), shared.policy.parameters(), strict=True):
        assert th.equal(a, b)
    assert shared.num_pseudo_steps == reference.num_pseudo_steps > 0
    shared.close_rollout_workers()
    assert two_nodes.is_initialized()  # a cluster the script joined is left running
