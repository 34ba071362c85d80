"""The estimator registry and the public update API (collect, plan, roll out, train)."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.envs import IdentityEnvMultiDiscrete

from agents import ALGOS
from arsm_rl import ARSM, ESTIMATORS, register_estimator
from arsm_rl.actions import distinct_codes
from arsm_rl.estimators import ReinforceEstimator, distinct_pseudo_actions, gather_pseudo_values, swap_pseudo_actions

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(n_steps=64, policy_kwargs=dict(net_arch=[8]))


def parameters(model: ARSM) -> list[np.ndarray]:
    return [p.detach().numpy().copy() for p in model.policy.parameters()]


def test_a_registered_estimator_trains_like_the_one_it_copies() -> None:
    """One class and one registry line make an estimator: a copy of REINFORCE under a new name trains bit for bit
    like ``estimator="reinforce"``, and the name is accepted (and listed) everywhere ARSM reads the registry."""

    @register_estimator
    class Copy(ReinforceEstimator):
        name = "reinforce_copy"
        summary = "REINFORCE again"

    try:
        copy = ARSM("MlpPolicy", "CartPole-v1", estimator="reinforce_copy", seed=3, **SMALL).learn(192)
        reference = ARSM("MlpPolicy", "CartPole-v1", estimator="reinforce", seed=3, **SMALL).learn(192)
        assert all(np.array_equal(a, b) for a, b in zip(parameters(copy), parameters(reference), strict=True))
        with pytest.raises(ValueError, match="reinforce_copy"):
            ARSM("MlpPolicy", "CartPole-v1", estimator="nope")
    finally:
        del ESTIMATORS["reinforce_copy"]


def test_old_import_paths_still_work() -> None:
    """``arsm_rl.strategies``, the estimators' former home, re-exports each of its names from where it lives now."""
    import arsm_rl.actions
    import arsm_rl.estimators
    import arsm_rl.rollouts
    import arsm_rl.strategies

    homes = (arsm_rl.actions, arsm_rl.estimators, arsm_rl.rollouts)
    for name in arsm_rl.strategies.__all__:
        assert any(getattr(home, name, None) is getattr(arsm_rl.strategies, name) for home in homes), name


def test_distinct_codes_reduce_to_the_per_variable_recipe() -> None:
    """For one Discrete dimension the joint-code dedup is estimators.distinct_pseudo_actions + gather_pseudo_values."""
    gen = th.Generator().manual_seed(0)
    logits = th.randn(50, 5, generator=gen, dtype=th.float64)
    pi = th.distributions.Dirichlet(th.ones(5, dtype=th.float64)).sample((50,))
    swaps = swap_pseudo_actions(logits, pi)
    q = th.randn(50, 5, generator=gen, dtype=th.float64)
    rows, codes, inverse = distinct_codes(swaps.numpy(), 5)
    mask = np.zeros((50, 5), dtype=bool)
    mask[rows, codes] = True
    assert np.array_equal(mask, distinct_pseudo_actions(swaps).numpy())
    gathered = q.numpy()[rows, codes][inverse].reshape(swaps.shape)
    assert np.array_equal(gathered, gather_pseudo_values(swaps, q).numpy())


def test_algos_and_docs_read_the_registry() -> None:
    """``train.py --algo`` offers every estimator marked ``algo``, and docs/arsm.md documents every estimator."""
    assert {name for name, cls in ESTIMATORS.items() if cls.algo} == {"rloo", "all_action"}
    for name, cls in ESTIMATORS.items():
        if cls.algo:
            assert name in ALGOS and ALGOS[name]("MlpPolicy", "CartPole-v1", **SMALL).estimator == name
    docs = (ROOT / "docs" / "arsm.md").read_text()
    table = docs[docs.index("| `estimator` | rollouts per step |") :].split("\n\n")[0]
    assert re.findall(r"^\| `([a-z_]+)`", table, re.MULTILINE)[1:] == list(ESTIMATORS)  # after the header


def between(text: str, start: str, end: str) -> str:
    """The part of ``text`` from ``start`` to the next ``end``."""
    return text[text.index(start) :].split(end)[0]


def test_hand_written_lists_name_every_registered_estimator() -> None:
    """The prose lists of estimators (ARSM's ``estimator`` parameter, docs/arsm.md's list of the ``algo`` ones,
    README.md's list of the peers) name each registered estimator, so that registering one without documenting it
    fails here (docs/arsm.md's table: the test above)."""
    parameter = between(ARSM.__doc__ or "", ":param estimator:", ":param max_pseudo_rollouts:")
    assert [name for name in ESTIMATORS if f'``"{name}"``' not in parameter] == [], "missing from ARSM's docstring"
    docs = (ROOT / "docs" / "arsm.md").read_text()
    marked = re.findall(r"`([a-z_]+)`", between(docs, "the estimators marked `algo`:", ")"))
    assert marked == ["algo", *(name for name, cls in ESTIMATORS.items() if cls.algo)], "docs/arsm.md's algo list"
    readme = between((ROOT / "README.md").read_text(), "`estimator=` switches between", "or one you register")
    assert [name for name in ESTIMATORS if f"`{name}`" not in readme] == [], "missing from README.md's list"


def test_the_estimator_is_built_when_its_name_is_set(tmp_path: Path) -> None:
    """``strategy`` is built when ``estimator`` is set (construction, assignment, load), not at each use; an assigned
    name is checked as the constructor's argument is, and the model zip holds the name only."""
    model = ARSM("MlpPolicy", "CartPole-v1", **SMALL)
    assert model.strategy is model.strategy and type(model.strategy) is ESTIMATORS["arsm"]
    model.estimator = "rloo"
    assert model.estimator == "rloo" and type(model.strategy) is ESTIMATORS["rloo"]
    with pytest.raises(ValueError, match="Unknown estimator 'nope'"):
        model.estimator = "nope"
    multi = ARSM("MlpPolicy", IdentityEnvMultiDiscrete(3, ep_length=20), **SMALL)
    with pytest.raises(ValueError, match="needs a Discrete action space"):
        multi.estimator = "all_action"
    assert model.estimator == "rloo" and multi.estimator == "arsm"
    model.save(tmp_path / "model.zip")
    with zipfile.ZipFile(tmp_path / "model.zip") as archive:
        data = json.loads(archive.read("data"))
    assert data["estimator"] == "rloo" and not any("strategy" in key for key in data)
    for kwargs, name in (({}, "rloo"), ({"estimator": "ar"}, "ar")):
        loaded = ARSM.load(tmp_path / "model.zip", **kwargs)
        assert loaded.estimator == name and type(loaded.strategy) is ESTIMATORS[name]


@pytest.mark.parametrize("estimator", ["arsm", "rloo"])
def test_update_api_reproduces_learn(estimator: str) -> None:
    """collect_update + train, update by update, is learn() bit for bit; last_update reports what was run."""
    learned = ARSM("MlpPolicy", "CartPole-v1", estimator=estimator, seed=1, **SMALL).learn(3 * 64)
    stepped = ARSM("MlpPolicy", "CartPole-v1", estimator=estimator, seed=1, **SMALL)
    for _ in range(3):
        collected = stepped.collect_update()
        stepped.train(collected)
        report = stepped.last_update
        assert report is not None and set(report.seconds) == {"plan", "rollouts", "gradient"}
        assert len(report.rollouts.values) == len(report.plan.requests) == report.plan.counts[report.plan.used].sum()
    assert stepped.num_timesteps == learned.num_timesteps == 192
    assert stepped.num_pseudo_steps == learned.num_pseudo_steps
    assert all(np.array_equal(a, b) for a, b in zip(parameters(stepped), parameters(learned), strict=True))


def test_plan_requests_every_distinct_pseudo_action_once() -> None:
    """The plan asks for each distinct action the estimator selects at a used step, except the true action."""
    model = ARSM("MlpPolicy", "CartPole-v1", estimator="all_action", seed=0, **SMALL)
    collected = model.collect_update()
    plan = model.plan_update(collected)
    true = collected.actions[:, 0, 0]
    assert plan.requests == [(row, 1 - int(true[row])) for row in range(64)]  # two actions: the other one, every step
    assert plan.used.all() and plan.weight == 1.0


def test_rollouts_need_branch_points() -> None:
    """An update collected for a rollout-free estimator keeps no snapshots: asking it for rollouts is refused."""
    model = ARSM("MlpPolicy", "CartPole-v1", estimator="reinforce", seed=0, **SMALL)
    collected = model.collect_update()
    assert collected.branches == [None] * 64
    with pytest.raises(ValueError, match="rolls out nothing"):
        model.run_rollouts(collected, [(0, 1)])
