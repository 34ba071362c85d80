"""Numerical checks of ``arsm_rl.estimators`` (the acceptance checks A to E and G of the ARSM technical note).

Monte Carlo checks use a fixed seed, so they are deterministic; their tolerances are Bonferroni z-scores from
the sample standard error, so a correct estimator passes them for almost every seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import NormalDist

import numpy as np
import pytest
import torch as th

from arsm_rl.actions import JointActions
from arsm_rl.estimators import ESTIMATORS as ESTIMATORS_BY_NAME
from arsm_rl.estimators import (
    Draws,
    StepBatch,
    all_action_gradient,
    ar_gradient,
    ars_gradient,
    arsm_gradient,
    distinct_pseudo_actions,
    exact_gradient,
    gather_pseudo_values,
    race_actions,
    reinforce_gradient,
    rloo_gradient,
    swap_pseudo_actions,
)

ALPHA = 1e-3  # family-wise false-alarm rate of each Monte Carlo test


def bonferroni_z(n_tests: int, alpha: float = ALPHA) -> float:
    """Two-sided normal quantile that keeps the family-wise error of ``n_tests`` z-tests below ``alpha``."""
    return NormalDist().inv_cdf(1.0 - alpha / (2 * n_tests))


def dirichlet(batch: int, n_cat: int, generator: th.Generator, dtype: th.dtype = th.float64) -> th.Tensor:
    """Flat Dirichlet draws as normalised Exp(1) variables, shape (batch, n_cat)."""
    exp = th.empty(batch, n_cat, dtype=dtype).exponential_(generator=generator)
    return exp / exp.sum(dim=1, keepdim=True)


def brute_force_swaps(logits: th.Tensor, pi: th.Tensor) -> th.Tensor:
    """Reference swap matrix: swap pi_m and pi_j explicitly, then take the argmin, for every (m, j)."""
    n_cat = pi.shape[1]
    perm = th.arange(n_cat).repeat(n_cat, n_cat, 1)  # [C, C, C]: perm[m, j] swaps m and j
    rows, cols = th.meshgrid(th.arange(n_cat), th.arange(n_cat), indexing="ij")
    perm[rows, cols, rows] = cols
    perm[rows, cols, cols] = rows
    swapped = pi[:, perm]  # [B, C, C, C]
    return th.argmin(th.log(swapped) - logits[:, None, None, :], dim=3)


def toy_values(n_cat: int, ratio: float) -> th.Tensor:
    """The paper's toy reward f(z) = 0.5 + (z + 1) / (C R) for 0-indexed z, float64, shape (C,)."""
    return 0.5 + (th.arange(n_cat, dtype=th.float64) + 1) / (n_cat * ratio)


# ----------------------------------------------------------------------------------------------------------
# swap matrix


@pytest.mark.parametrize("dtype", [th.float32, th.float64])
@pytest.mark.parametrize("n_cat", [2, 3, 5, 17])
def test_swaps_match_brute_force(n_cat: int, dtype: th.dtype) -> None:
    gen = th.Generator().manual_seed(n_cat)
    batch = 300
    logits = th.randn(batch, n_cat, generator=gen).to(dtype)
    pi = dirichlet(batch, n_cat, gen, dtype)
    swaps = swap_pseudo_actions(logits, pi)
    assert swaps.dtype == th.long and swaps.shape == (batch, n_cat, n_cat)
    assert th.equal(swaps, brute_force_swaps(logits, pi))
    assert th.equal(swaps, swaps.transpose(1, 2))
    true = race_actions(logits, pi)
    assert th.equal(swaps.diagonal(dim1=1, dim2=2), true[:, None].expand(batch, n_cat))
    # a swap that does not involve z can only hand the win to m or j
    m, j = th.meshgrid(th.arange(n_cat), th.arange(n_cat), indexing="ij")
    z = true[:, None, None]
    untouched = (m != z) & (j != z)
    allowed = (swaps == z) | (swaps == m) | (swaps == j)
    assert bool(allowed[untouched].all())


@pytest.mark.parametrize("n_cat", [2, 3, 5])
def test_swaps_break_ties_like_argmin(n_cat: int) -> None:
    # a few distinct noise and logit values make ties common; -inf logits (masked actions) must never win
    gen = th.Generator().manual_seed(100 + n_cat)
    batch = 500
    pi = th.randint(1, 3, (batch, n_cat), generator=gen).double()
    pi = pi / pi.sum(dim=1, keepdim=True)
    logits = 0.5 * th.randint(0, 2, (batch, n_cat), generator=gen).double()
    assert th.equal(swap_pseudo_actions(logits, pi), brute_force_swaps(logits, pi))
    logits[:, 0] = -math.inf
    swaps = swap_pseudo_actions(logits, pi)
    assert th.equal(swaps, brute_force_swaps(logits, pi))
    assert not bool((swaps == 0).any())


def test_swaps_large_c_spot_checks() -> None:
    gen = th.Generator().manual_seed(7)
    batch, n_cat = 8, 1000
    logits = th.randn(batch, n_cat, generator=gen)
    pi = dirichlet(batch, n_cat, gen, th.float32)
    swaps = swap_pseudo_actions(logits, pi)
    assert swaps.shape == (batch, n_cat, n_cat)
    true = race_actions(logits, pi)
    pairs = th.randint(0, n_cat, (40, 2), generator=gen).tolist()
    pairs += [[int(true[0]), 5], [17, int(true[0])], [int(true[0]), int(true[0])]]  # include z's row and column
    for m, j in pairs:
        swapped = pi.clone()
        swapped[:, [m, j]] = pi[:, [j, m]]
        assert th.equal(swaps[:, m, j], th.argmin(th.log(swapped) - logits, dim=1)), (m, j)


def test_distinct_and_gather() -> None:
    gen = th.Generator().manual_seed(3)
    batch, n_cat = 50, 6
    logits = 2.0 * th.randn(batch, n_cat, generator=gen, dtype=th.float64)
    pi = dirichlet(batch, n_cat, gen)
    swaps = swap_pseudo_actions(logits, pi)
    mask = distinct_pseudo_actions(swaps)
    assert mask.dtype == th.bool and mask.shape == (batch, n_cat)
    for b in range(batch):
        assert set(th.nonzero(mask[b]).flatten().tolist()) == set(swaps[b].flatten().tolist())
    assert bool(mask[th.arange(batch), race_actions(logits, pi)].all())
    # values of absent actions are never read
    q = th.randn(batch, n_cat, generator=gen, dtype=th.float64)
    f = gather_pseudo_values(swaps, q.masked_fill(~mask, math.nan))
    assert th.equal(f, q[th.arange(batch)[:, None, None], swaps])


def test_uniform_policy_uses_every_action() -> None:
    # at logits 0, swapping z with j makes j the winner, so every category appears
    gen = th.Generator().manual_seed(4)
    pi = dirichlet(20, 7, gen)
    assert bool(distinct_pseudo_actions(swap_pseudo_actions(th.zeros(20, 7, dtype=th.float64), pi)).all())


@pytest.mark.parametrize("dtype", [th.float32, th.float64])
def test_race_actions_follow_softmax(dtype: th.dtype) -> None:
    gen = th.Generator().manual_seed(5)
    n_draws, n_cat = 200_000, 5
    logits = th.tensor([0.3, -1.0, 0.0, 1.2, -0.4], dtype=dtype)
    pi = dirichlet(n_draws, n_cat, gen, dtype)
    counts = th.bincount(race_actions(logits.expand(n_draws, n_cat), pi), minlength=n_cat).double()
    prob = th.softmax(logits.double(), dim=0)
    z_scores = (counts - n_draws * prob) / th.sqrt(n_draws * prob * (1 - prob))
    assert float(z_scores.abs().max()) <= bonferroni_z(n_cat)


# ----------------------------------------------------------------------------------------------------------
# pinned hand-computed values, C = 3
#
# pi = (0.2, 0.5, 0.3), logits = (0, 0.5, -0.5), so e = ln pi - logits = (-1.609, -1.193, -0.704) and z = 0.
#   swap (0, 1): pi' = (0.5, 0.2, 0.3), e' = (-0.693, -2.109, -0.704) -> 1
#   swap (0, 2): pi' = (0.3, 0.5, 0.2), e' = (-1.204, -1.193, -1.109) -> 0
#   swap (1, 2): pi' = (0.2, 0.3, 0.5), e' = (-1.609, -1.704, -0.193) -> 1
# so S = [[0, 1, 0], [1, 0, 1], [0, 1, 0]].  With f = (1, 3, 10): F = [[1, 3, 1], [3, 1, 3], [1, 3, 1]],
# column means (5/3, 7/3, 5/3), centred columns (-2/3, 4/3, -2/3), (2/3, -4/3, 2/3), (-2/3, 4/3, -2/3),
# weights 1/C - pi = (2/15, -1/6, 1/30).
#   ARSM: g_0 = -4/45 - 1/9 - 1/45 = -2/9, g_1 = 8/45 + 2/9 + 2/45 = 4/9, g_2 = g_0 = -2/9.
#   ARS, ref 1: (2/3, -4/3, 2/3) (1 - 3 * 0.5) = (-1/3, 2/3, -1/3).
#   ARS, ref 0: (-2/3, 4/3, -2/3) (1 - 3 * 0.2) = (-4/15, 8/15, -4/15).
#   AR: f(z) (1 - 3 pi) = (0.4, -0.5, 0.1).

PI3 = th.tensor([[0.2, 0.5, 0.3]], dtype=th.float64)
LOGITS3 = th.tensor([[0.0, 0.5, -0.5]], dtype=th.float64)
F3 = th.tensor([[1.0, 3.0, 10.0]], dtype=th.float64)


def test_pinned_c3() -> None:
    swaps = swap_pseudo_actions(LOGITS3, PI3)
    assert swaps.tolist() == [[[0, 1, 0], [1, 0, 1], [0, 1, 0]]]
    assert distinct_pseudo_actions(swaps).tolist() == [[True, True, False]]
    f = gather_pseudo_values(swaps, F3)
    assert f.tolist() == [[[1.0, 3.0, 1.0], [3.0, 1.0, 3.0], [1.0, 3.0, 1.0]]]
    th.testing.assert_close(arsm_gradient(PI3, f), th.tensor([[-2 / 9, 4 / 9, -2 / 9]], dtype=th.float64))
    ars = ars_gradient(PI3.expand(2, 3), f.expand(2, 3, 3), th.tensor([1, 0]))
    th.testing.assert_close(ars, th.tensor([[-1 / 3, 2 / 3, -1 / 3], [-4 / 15, 8 / 15, -4 / 15]], dtype=th.float64))
    ar = ar_gradient(PI3, F3[:, 0])
    th.testing.assert_close(ar, th.tensor([[0.4, -0.5, 0.1]], dtype=th.float64))


def test_pinned_baselines() -> None:
    # logits (0, ln 3): p = (1/4, 3/4)
    logits = th.tensor([[0.0, math.log(3.0)]], dtype=th.float64)
    # REINFORCE, z = 1, f = 2: 2 ((0, 1) - (1/4, 3/4)) = (-1/2, 1/2)
    g = reinforce_gradient(logits, th.tensor([1]), th.tensor([2.0], dtype=th.float64))
    th.testing.assert_close(g, th.tensor([[-0.5, 0.5]], dtype=th.float64))
    # all-action, q = (1, 5): p.q = 4, g = (1/4 (1 - 4), 3/4 (5 - 4)) = (-3/4, 3/4)
    q = th.tensor([[1.0, 5.0]], dtype=th.float64)
    th.testing.assert_close(all_action_gradient(logits, q), th.tensor([[-0.75, 0.75]], dtype=th.float64))
    # RLOO, logits 0, actions (0, 1, 0), f = (1, 2, 4): mean 7/3, (f - mean) / (K - 1) = (-2/3, -1/6, 5/6),
    # category 0 collects -2/3 + 5/6 = 1/6, category 1 collects -1/6; they sum to 0, so no softmax term
    g = rloo_gradient(th.zeros(1, 2, dtype=th.float64), th.tensor([[0, 1, 0]]), th.tensor([[1.0, 2.0, 4.0]], dtype=th.float64))
    th.testing.assert_close(g, th.tensor([[1 / 6, -1 / 6]], dtype=th.float64))


# ----------------------------------------------------------------------------------------------------------
# the ground truth: exact_gradient (autograd) against hand values, finite differences and the closed form


def finite_difference_gradient(logits: th.Tensor, q: th.Tensor, step: float = 1e-6) -> th.Tensor:
    """Central differences of E[q(z)] = softmax(logits) . q, one logit at a time (no autograd, no closed form)."""
    out = th.empty_like(logits)
    for c in range(logits.shape[1]):
        up, down = logits.clone(), logits.clone()
        up[:, c] += step
        down[:, c] -= step
        out[:, c] = ((th.softmax(up, dim=1) * q).sum(dim=1) - (th.softmax(down, dim=1) * q).sum(dim=1)) / (2 * step)
    return out


def test_exact_gradient_hand_values() -> None:
    # logits (0, ln 3), q = (1, 5): p = (1/4, 3/4), p.q = 4, g = (1/4 (1 - 4), 3/4 (5 - 4)) = (-3/4, 3/4)
    # logits 0, q = (0, 0, 3): p = 1/3, p.q = 1, g = 1/3 (q - 1) = (-1/3, -1/3, 2/3)
    # logits (0, ln 2, ln 5), q = (2, -1, 1): p = (1/8, 2/8, 5/8), p.q = 5/8, g = p (q - 5/8) = (11/64, -26/64, 15/64)
    cases = [
        ([0.0, math.log(3.0)], [1.0, 5.0], [-0.75, 0.75]),
        ([0.0, 0.0, 0.0], [0.0, 0.0, 3.0], [-1 / 3, -1 / 3, 2 / 3]),
        ([0.0, math.log(2.0), math.log(5.0)], [2.0, -1.0, 1.0], [11 / 64, -26 / 64, 15 / 64]),
    ]
    for logits, q, expected in cases:
        got = exact_gradient(th.tensor([logits], dtype=th.float64), th.tensor([q], dtype=th.float64))
        th.testing.assert_close(got, th.tensor([expected], dtype=th.float64), rtol=0, atol=1e-14)


@pytest.mark.parametrize("n_cat", [2, 3, 5, 17, 100])
def test_exact_gradient_matches_finite_differences_and_all_action(n_cat: int) -> None:
    """Three independent computations of d E[q] / d logits agree: autograd, finite differences and the closed form
    of all_action_gradient (the all-action estimator is exact, so it is checked here and not by a z-test)."""
    gen = th.Generator().manual_seed(50 + n_cat)
    batch = 20
    logits = 2.0 * th.randn(batch, n_cat, generator=gen, dtype=th.float64)
    q = 5.0 + th.randn(batch, n_cat, generator=gen, dtype=th.float64)  # an offset: the closed form must centre q
    exact = exact_gradient(logits, q)
    assert exact.shape == (batch, n_cat) and not logits.requires_grad
    th.testing.assert_close(exact, finite_difference_gradient(logits, q), rtol=0, atol=1e-8)
    th.testing.assert_close(all_action_gradient(logits, q), exact, rtol=0, atol=1e-14)
    assert float(exact.abs().max()) > 1e-2  # not trivially zero


def outer(vectors: list[th.Tensor]) -> th.Tensor:
    """Outer product of 1-D tensors: ``out[a_0, ..., a_{K-1}] = prod_k vectors[k][a_k]``."""
    out = th.ones((), dtype=vectors[0].dtype)
    for k, v in enumerate(vectors):
        out = out * v.reshape([-1 if d == k else 1 for d in range(len(vectors))])
    return out


def multidiscrete_exact_gradient(logits: list[th.Tensor], table: th.Tensor) -> list[th.Tensor]:
    """d E[f(a)] / d logits_k of a factorised categorical, by autograd of the sum over every joint action a of
    prod_k softmax(logits_k)[a_k] f(a). ``table[a_0, ..., a_{K-1}]`` holds f; one (C_k,) logit vector per dimension."""
    leaves = [x.detach().clone().requires_grad_(True) for x in logits]
    expected = (outer([th.softmax(leaf, dim=0) for leaf in leaves]) * table).sum()
    return list(th.autograd.grad(expected, leaves))


@pytest.mark.parametrize("nvec", [[3, 2], [4, 3, 2]])
def test_multidiscrete_reference(nvec: list[int]) -> None:
    """The factorised reference equals, per dimension, the exact gradient of that dimension's conditional values
    q_k(c) = E[f(a) | a_k = c], and central differences of the factorised expectation."""
    gen = th.Generator().manual_seed(sum(nvec))
    logits = [th.randn(n, generator=gen, dtype=th.float64) for n in nvec]
    table = th.randn(*nvec, generator=gen, dtype=th.float64)
    reference = multidiscrete_exact_gradient(logits, table)
    probs = [th.softmax(x, dim=0) for x in logits]
    step = 1e-6
    for k, n_cat in enumerate(nvec):
        weights = outer([th.ones(n_cat, dtype=th.float64) if d == k else p for d, p in enumerate(probs)])
        conditional = (weights * table).sum(dim=[d for d in range(len(nvec)) if d != k])
        assert conditional.shape == (n_cat,)
        th.testing.assert_close(reference[k], exact_gradient(logits[k][None], conditional[None])[0], rtol=0, atol=1e-14)
        for c in range(n_cat):
            moved = []
            for sign in (1.0, -1.0):
                x = logits[k].clone()
                x[c] += sign * step
                weights = outer([th.softmax(x, dim=0) if d == k else p for d, p in enumerate(probs)])
                moved.append(float((weights * table).sum()))
            assert abs((moved[0] - moved[1]) / (2 * step) - float(reference[k][c])) < 1e-8
    assert max(float(g.abs().max()) for g in reference) > 1e-2


# ----------------------------------------------------------------------------------------------------------
# check A: unbiasedness


def draw_estimates(name: str, logits: th.Tensor, f: th.Tensor, n_draws: int, gen: th.Generator) -> th.Tensor:
    """``n_draws`` independent estimates of d E[f(z)] / d logits at one logit vector, shape (n_draws, C)."""
    n_cat = logits.shape[0]
    logits = logits.expand(n_draws, n_cat)
    q = f.expand(n_draws, n_cat)
    pi = dirichlet(n_draws, n_cat, gen)
    if name == "arsm":
        return arsm_gradient(pi, gather_pseudo_values(swap_pseudo_actions(logits, pi), q))
    if name == "ars":
        ref = th.randint(0, n_cat, (n_draws,), generator=gen)
        return ars_gradient(pi, gather_pseudo_values(swap_pseudo_actions(logits, pi), q), ref)
    if name == "ar":
        return ar_gradient(pi, f[race_actions(logits, pi)])
    if name == "reinforce":
        actions = race_actions(logits, pi)
        return reinforce_gradient(logits, actions, f[actions])
    if name == "rloo":
        n_samples = 3
        pis = dirichlet(n_draws * n_samples, n_cat, gen).reshape(n_draws, n_samples, n_cat)
        actions = th.stack([race_actions(logits, pis[:, k]) for k in range(n_samples)], dim=1)
        return rloo_gradient(logits, actions, f[actions])
    raise AssertionError(name)


#: the Monte Carlo estimators (all_action is exact: test_exact_gradient_matches_finite_differences_and_all_action)
ESTIMATORS = ["arsm", "ars", "ar", "reinforce", "rloo"]


@pytest.mark.parametrize("name", ESTIMATORS)
@pytest.mark.parametrize(("n_cat", "toy"), [(2, False), (3, False), (5, False), (5, True), (30, True)])
def test_unbiased(name: str, n_cat: int, toy: bool) -> None:
    gen = th.Generator().manual_seed(1000 * n_cat + int(toy))
    logits = 0.5 * th.randn(n_cat, generator=gen, dtype=th.float64)
    f = toy_values(n_cat, n_cat) if toy else th.randn(n_cat, generator=gen, dtype=th.float64)
    n_draws = 20_000
    estimates = draw_estimates(name, logits, f, n_draws, gen)
    target = exact_gradient(logits[None], f[None])[0]
    standard_error = estimates.std(dim=0) / math.sqrt(n_draws)
    error = (estimates.mean(dim=0) - target).abs()
    assert bool((error <= bonferroni_z(n_cat) * standard_error + 1e-12).all()), (error / standard_error).max()


def multidiscrete_estimates(
    name: str, nvec: list[int], logits: np.ndarray, table: np.ndarray, n_draws: int, seed: int
) -> th.Tensor:
    """``n_draws`` estimates of d E[f(a)] / d logits, shape (n_draws, sum(nvec)), by the registered estimator
    ``name`` through its public API (select, then gradient), as ARSM calls it at ``n_draws`` steps with the same
    logits; every selected joint action is valued exactly by ``table`` (indexed by the joint code)."""
    actions = JointActions(np.array(nvec), discrete=False)
    estimator = ESTIMATORS_BY_NAME[name]()
    rng = np.random.default_rng(seed)
    flat = np.broadcast_to(logits.astype(np.float32), (n_draws, len(logits))).copy()
    noise = actions.noise(rng, n_draws)
    true_codes = actions.encode(actions.race(th.as_tensor(flat), noise))
    selection = estimator.select(Draws(actions, flat, noise, true_codes), rng)
    k, c = actions.valid.shape
    batch = StepBatch(
        actions=actions,
        logits=actions.padded(th.as_tensor(flat, dtype=th.float64)).reshape(-1, c),
        noise=th.as_tensor(noise, dtype=th.float64).reshape(-1, c),
        true_codes=true_codes,
        q_true=table[true_codes],
        selection=selection,
        values=None if selection is None else table[selection.codes],
    )
    return estimator.gradient(batch).reshape(n_draws, k, c)[:, actions.valid]


@pytest.mark.parametrize("name", ESTIMATORS)
@pytest.mark.parametrize("nvec", [[3, 2], [2, 4, 3]])
def test_multidiscrete_unbiased(name: str, nvec: list[int]) -> None:
    """docs/arsm.md: with one swap applied to every dimension and padded dimensions, each estimator stays unbiased
    for MultiDiscrete actions. z-test of the mean of 20,000 estimates against the factorised exact gradient."""
    gen = th.Generator().manual_seed(len(nvec))
    logits = [(0.7 * th.randn(n, generator=gen, dtype=th.float64)).float().double() for n in nvec]  # float32 values
    table = th.randn(*nvec, generator=gen, dtype=th.float64)  # f of a joint action, not additive over dimensions
    codes_table = table.permute(*reversed(range(len(nvec)))).reshape(-1).numpy()  # mixed radix: dimension 0 fastest
    n_draws = 20_000
    estimates = multidiscrete_estimates(name, nvec, th.cat(logits).numpy(), codes_table, n_draws, seed=7 + len(nvec))
    target = th.cat(multidiscrete_exact_gradient(logits, table))
    standard_error = estimates.std(dim=0) / math.sqrt(n_draws)
    z = (estimates.mean(dim=0) - target) / standard_error
    assert bool((z.abs() <= bonferroni_z(sum(nvec))).all()), z
    assert float(target.abs().max()) > 20 * float(standard_error.max())  # the test could see a biased estimator


# ----------------------------------------------------------------------------------------------------------
# checks B, C: structural identities


def test_constant_f_gives_exact_zero() -> None:
    gen = th.Generator().manual_seed(11)
    batch, n_cat = 200, 6
    logits = th.randn(batch, n_cat, generator=gen, dtype=th.float64)
    pi = dirichlet(batch, n_cat, gen)
    q = th.full((batch, n_cat), 0.7, dtype=th.float64)
    f = gather_pseudo_values(swap_pseudo_actions(logits, pi), q)
    zero = th.zeros(batch, n_cat, dtype=th.float64)
    assert th.equal(arsm_gradient(pi, f), zero)
    assert th.equal(ars_gradient(pi, f, th.randint(0, n_cat, (batch,), generator=gen)), zero)
    actions = th.randint(0, n_cat, (batch, 4), generator=gen)
    assert th.equal(rloo_gradient(logits, actions, q[:, :4]), zero)
    assert th.equal(all_action_gradient(logits, q), zero)


@pytest.mark.parametrize("n_cat", [5, 30])
def test_swap_estimates_sum_to_zero(n_cat: int) -> None:
    gen = th.Generator().manual_seed(12)
    batch = 500
    logits = th.randn(batch, n_cat, generator=gen, dtype=th.float64)
    pi = dirichlet(batch, n_cat, gen)
    f = gather_pseudo_values(swap_pseudo_actions(logits, pi), th.randn(batch, n_cat, generator=gen, dtype=th.float64))
    assert float(arsm_gradient(pi, f).sum(dim=1).abs().max()) < 1e-10
    ref = th.randint(0, n_cat, (batch,), generator=gen)
    assert float(ars_gradient(pi, f, ref).sum(dim=1).abs().max()) < 1e-10


def test_no_pseudo_action_gives_exact_zero() -> None:
    # check C: logits (8, 0, 0, 0); reference 1998 of 2000 draws have every pseudo action equal to z
    gen = th.Generator().manual_seed(13)
    batch = 2000
    logits = th.tensor([8.0, 0.0, 0.0, 0.0], dtype=th.float64).expand(batch, 4)
    pi = dirichlet(batch, 4, gen)
    swaps = swap_pseudo_actions(logits, pi)
    unchanged = (swaps == race_actions(logits, pi)[:, None, None]).flatten(1).all(dim=1)
    assert int(unchanged.sum()) >= 0.99 * batch
    f = gather_pseudo_values(swaps, th.randn(batch, 4, generator=gen, dtype=th.float64))
    assert th.equal(arsm_gradient(pi, f)[unchanged], th.zeros(int(unchanged.sum()), 4, dtype=th.float64))
    assert bool((distinct_pseudo_actions(swaps).sum(dim=1)[unchanged] == 1).all())


# ----------------------------------------------------------------------------------------------------------
# check E: C = 2 closed forms


@pytest.mark.parametrize("p_first", [0.7, 0.99])
def test_binary_closed_forms(p_first: float) -> None:
    gen = th.Generator().manual_seed(14)
    batch = 200_000
    logits = th.tensor([math.log(p_first), math.log(1 - p_first)], dtype=th.float64).expand(batch, 2)
    pi = dirichlet(batch, 2, gen)
    swaps = swap_pseudo_actions(logits, pi)
    true, pseudo = swaps[:, 0, 0], swaps[:, 0, 1]
    # P(pseudo != true) = 2 min(p_1, p_2)
    expected = 2 * min(p_first, 1 - p_first)
    observed = float((pseudo != true).double().mean())
    assert abs(observed - expected) <= bonferroni_z(1) * math.sqrt(expected * (1 - expected) / batch)
    # g_1 = -g_2 = (f(z) - f(z')) (1/2 - pi_1)
    q = th.tensor([[0.3, -1.1]], dtype=th.float64).expand(batch, 2)
    g = arsm_gradient(pi, gather_pseudo_values(swaps, q))
    closed = (q[0, true] - q[0, pseudo]) * (0.5 - pi[:, 0])
    th.testing.assert_close(g[:, 0], closed, rtol=0, atol=1e-15)
    th.testing.assert_close(g[:, 1], -closed, rtol=0, atol=1e-15)


# ----------------------------------------------------------------------------------------------------------
# check D: variance ordering on the toy (C = R = 30, logits 0)


def test_variance_ordering_on_toy() -> None:
    gen = th.Generator().manual_seed(15)
    n_cat, n_draws = 30, 5000
    logits, f = th.zeros(n_cat, dtype=th.float64), toy_values(n_cat, 30)
    variance = {name: float(draw_estimates(name, logits, f, n_draws, gen).var(dim=0).mean()) for name in ESTIMATORS}
    assert 10 * variance["arsm"] < variance["ars"]
    assert 10 * variance["ars"] < min(variance["reinforce"], variance["ar"])
    # the technical note's numpy run: 9.8e-8, 8.6e-6, 8.6e-3, 0.25; allow a factor of 2 for Monte Carlo spread
    for name, reference in [("arsm", 9.8e-8), ("ars", 8.6e-6), ("reinforce", 8.6e-3), ("ar", 0.25)]:
        assert reference / 2 < variance[name] < 2 * reference, (name, variance[name])


# ----------------------------------------------------------------------------------------------------------
# check G: sign and loss wiring


def test_loss_wiring() -> None:
    gen = th.Generator().manual_seed(16)
    batch, n_cat, n_features = 64, 5, 3
    weight = th.randn(n_features, n_cat, generator=gen, dtype=th.float64, requires_grad=True)
    features = th.randn(batch, n_features, generator=gen, dtype=th.float64)
    logits = features @ weight
    pi = dirichlet(batch, n_cat, gen)
    q = th.randn(batch, n_cat, generator=gen, dtype=th.float64)
    g = arsm_gradient(pi, gather_pseudo_values(swap_pseudo_actions(logits.detach(), pi), q))
    # d loss / d logits = -g
    leaf = logits.detach().requires_grad_(True)
    (-(leaf * g).sum()).backward()
    assert leaf.grad is not None
    th.testing.assert_close(leaf.grad, -g, rtol=0, atol=0)
    # log_softmax in place of logits gives the same parameter gradient because each row of g sums to zero
    (grad_raw,) = th.autograd.grad(-(logits * g).sum(), weight, retain_graph=True)
    (grad_log,) = th.autograd.grad(-(th.log_softmax(logits, dim=1) * g).sum(), weight)
    th.testing.assert_close(grad_raw, grad_log, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["arsm", "rloo"])
def test_one_ascent_step_raises_expected_reward(name: str) -> None:
    """One ascent step (step size 1) along an estimate raises the toy's expected reward by what a step along the
    exact gradient does, on average: the step is small, so the improvement is linear in the estimate up to a term
    of order Var[g], negligible for these low-variance estimators. z-test over 500 independent steps, |z| <= 4."""
    gen = th.Generator().manual_seed(17)
    repeats, n_cat = 500, 30
    f = toy_values(n_cat, 30)
    logits = th.zeros(n_cat, dtype=th.float64)
    before = th.softmax(logits, dim=0) @ f
    exact_improvement = float(th.softmax(logits + exact_gradient(logits[None], f[None])[0], dim=0) @ f - before)
    g = draw_estimates(name, logits, f, repeats, gen)
    improvement = th.softmax(logits + g, dim=1) @ f - before
    standard_error = float(improvement.std()) / math.sqrt(repeats)
    assert exact_improvement > 20 * standard_error  # 3.1e-6: a halved, doubled or reversed step is many se away
    z = (float(improvement.mean()) - exact_improvement) / standard_error
    assert abs(z) <= 4.0, (float(improvement.mean()), exact_improvement, z)


# ----------------------------------------------------------------------------------------------------------
# validation

B4C3 = th.zeros(4, 3)
LONG4 = th.zeros(4, dtype=th.long)

BAD_CALLS: list[tuple[str, Callable[[], object], str]] = [
    ("f not square", lambda: arsm_gradient(B4C3, B4C3), "arsm_gradient: f must have shape (B, C, C) = (4, 3, 3), got (4, 3)"),
    ("pi 1-D", lambda: arsm_gradient(th.zeros(3), th.zeros(1, 3, 3)), "arsm_gradient: pi must have shape (B, C), got (3,)"),
    ("one category", lambda: swap_pseudo_actions(th.zeros(4, 1), th.ones(4, 1)), "at least C = 2"),
    ("pi shape", lambda: race_actions(B4C3, th.zeros(4, 2)), "race_actions: pi must have shape (B, C) = (4, 3), got (4, 2)"),
    ("integer pi", lambda: race_actions(B4C3, th.zeros(4, 3, dtype=th.long)), "pi must be a floating-point tensor"),
    ("mixed dtypes", lambda: swap_pseudo_actions(B4C3, th.zeros(4, 3, dtype=th.float64)), "must share one dtype"),
    ("float actions", lambda: reinforce_gradient(B4C3, th.zeros(4), th.zeros(4)), "actions must have dtype torch.int64"),
    ("int32 ref", lambda: ars_gradient(B4C3, th.zeros(4, 3, 3), LONG4.int()), "ref must have dtype torch.int64"),
    ("ref shape", lambda: ars_gradient(B4C3, th.zeros(4, 3, 3), LONG4[:3]), "ref must have shape (B,) = (4,)"),
    ("f_true shape", lambda: ar_gradient(B4C3, th.zeros(4, 1)), "ar_gradient: f_true must have shape (B,) = (4,), got (4, 1)"),
    ("rloo K=1", lambda: rloo_gradient(B4C3, th.zeros(4, 1, dtype=th.long), th.zeros(4, 1)), "K >= 2"),
    ("rloo f shape", lambda: rloo_gradient(B4C3, th.zeros(4, 2, dtype=th.long), th.zeros(4, 3)), "f must have shape (B, K)"),
    ("not square swaps", lambda: distinct_pseudo_actions(th.zeros(4, 3, 2, dtype=th.long)), "swaps must have shape (B, C, C)"),
    ("float swaps", lambda: gather_pseudo_values(th.zeros(4, 3, 3), B4C3), "swaps must have dtype torch.int64"),
    ("q shape", lambda: gather_pseudo_values(th.zeros(4, 3, 3, dtype=th.long), th.zeros(4, 2)), "q must have shape (B, C)"),
    ("not a tensor", lambda: all_action_gradient(B4C3, [[0.0] * 3] * 4), "q must be a torch.Tensor"),  # type: ignore[arg-type]
    ("exact q shape", lambda: exact_gradient(B4C3, th.zeros(4, 2)), "exact_gradient: q must have shape (B, C) = (4, 3)"),
]


@pytest.mark.parametrize(("call", "message"), [(c, m) for _, c, m in BAD_CALLS], ids=[i for i, _, _ in BAD_CALLS])
def test_validation(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError) as info:
        call()
    assert message in str(info.value)


@pytest.mark.parametrize("name", list(ESTIMATORS_BY_NAME))
def test_selecting_by_step_draws_nothing_and_reads_each_step_alone(name: str) -> None:
    """What lets a step's rollouts start while the update is still collected (``selects_by_step``): such an estimator
    draws nothing from its generator, and selects the same actions for steps taken in chunks as for all at once.
    The built-in ones that do not (ARS's reference, RLOO's fresh actions) say so."""
    estimator = ESTIMATORS_BY_NAME[name]()
    discrete = name == "all_action"  # Discrete only
    actions = JointActions(np.array([5] if discrete else [3, 4]), discrete=discrete)
    rng = np.random.default_rng(0)
    n_rows = 12
    logits = rng.normal(size=(n_rows, int(actions.nvec.sum()))).astype(np.float32)
    noise = actions.noise(rng, n_rows)
    true_codes = actions.encode(actions.race(th.as_tensor(logits), noise))
    generator = np.random.default_rng(1)
    state = generator.bit_generator.state
    whole = estimator.select(Draws(actions, logits, noise, true_codes), generator)
    if not estimator.selects_by_step:
        assert name in ("ars", "rloo", "ar", "reinforce")
        return
    assert generator.bit_generator.state == state and whole is not None
    chunks = [estimator.select(Draws(actions, logits[rows], noise[rows], true_codes[rows]), generator)
              for rows in (slice(0, 5), slice(5, 12))]  # fmt: skip
    assert np.array_equal(np.concatenate([chunk.codes for chunk in chunks if chunk is not None]), whole.codes)
