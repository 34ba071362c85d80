"""Rollout workers on a Ray cluster of two nodes (issue 25): actors on both nodes, the same training as no workers.

The cluster and the training run in a fresh Python process, which joins the cluster through ``RAY_ADDRESS`` as a
user's script does: with Ray 2.60 a process that has started and shut down a local Ray (as other tests do) cannot
then start actors on a cluster of several nodes (they die before they start; Ray alone, without arsm-rl, shows it),
and keeps that Ray's authentication settings.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray (pip install -e '.[ray]')"),
]

#: Starts a cluster of two nodes of one CPU each, trains with and without 2 Ray workers on it and prints, as JSON,
#: what the test checks.
SCRIPT = textwrap.dedent(
    """
    import json
    import os

    import ray
    import torch as th
    from stable_baselines3.common.callbacks import BaseCallback

    from arsm_rl import ARSM

    SMALL = dict(policy_kwargs=dict(net_arch=[16]), n_steps=64, seed=0)


    class CpusInUse(BaseCallback):
        '''Reads, during the second update's collection (the workers are up), the nodes and the CPUs, all and free.'''

        seen = None

        def _on_step(self):
            if self.num_timesteps == 65:
                self.seen = [len(ray.nodes()), ray.cluster_resources()["CPU"], ray.available_resources().get("CPU", 0.0)]
            return True


    def train():
        reference = ARSM("MlpPolicy", "CartPole-v1", **SMALL).learn(192)
        watch = CpusInUse()
        shared = ARSM("MlpPolicy", "CartPole-v1", n_rollout_workers=2, rollout_backend="ray", **SMALL)
        shared.start_rollout_workers()  # ready from the first update on
        shared.learn(192, callback=watch)
        equal = all(th.equal(a, b) for a, b in zip(reference.policy.parameters(), shared.policy.parameters()))
        result = dict(seen=watch.seen, equal=equal, worker_rollouts=shared.last_update.rollouts.worker_rollouts,
                      pseudo_steps=[reference.num_pseudo_steps, shared.num_pseudo_steps])
        shared.close_rollout_workers()
        result["joined_left_running"] = ray.is_initialized()  # a cluster the script joined is left running
        return result


    if __name__ == "__main__":
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        try:
            cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            os.environ["RAY_ADDRESS"] = cluster.address  # as a user's script is started with it
            print(json.dumps(train()))
        finally:
            ray.shutdown()
            cluster.shutdown()
    """
)


def test_workers_on_two_ray_nodes_train_as_without_workers(tmp_path: Path) -> None:
    script = tmp_path / "train_on_the_cluster.py"
    script.write_text(SCRIPT)
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"  # an ~/.ray/auth_token left by an earlier local Ray would refuse the second node
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["worker_rollouts"] > 0
    # two nodes of one CPU each and no CPU free: one actor (one CPU each) on each node
    assert result["seen"] == [2, 2.0, 0.0]
    assert result["equal"]  # the same parameters as without workers, bit for bit
    reference_steps, shared_steps = result["pseudo_steps"]
    assert shared_steps == reference_steps > 0
    assert result["joined_left_running"]
