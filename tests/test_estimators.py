"""Numerical checks of ``arsm_rl.estimators`` (the acceptance checks A to E and G of the ARSM technical note).

Monte Carlo checks use a fixed seed, so they are deterministic; their tolerances are Bonferroni z-scores from
the sample standard error, so a correct estimator passes them for almost every seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import NormalDist

import pytest
import torch as th

from arsm_rl.estimators import (
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
    assert exact_gradient is all_action_gradient
    # RLOO, logits 0, actions (0, 1, 0), f = (1, 2, 4): mean 7/3, (f - mean) / (K - 1) = (-2/3, -1/6, 5/6),
    # category 0 collects -2/3 + 5/6 = 1/6, category 1 collects -1/6; they sum to 0, so no softmax term
    g = rloo_gradient(th.zeros(1, 2, dtype=th.float64), th.tensor([[0, 1, 0]]), th.tensor([[1.0, 2.0, 4.0]], dtype=th.float64))
    th.testing.assert_close(g, th.tensor([[1 / 6, -1 / 6]], dtype=th.float64))


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
    if name == "all_action":
        return all_action_gradient(logits, q)
    raise AssertionError(name)


ESTIMATORS = ["arsm", "ars", "ar", "reinforce", "rloo", "all_action"]


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
    assert variance["all_action"] == 0.0
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


def test_one_ascent_step_raises_expected_reward() -> None:
    gen = th.Generator().manual_seed(17)
    repeats, n_cat = 200, 30
    f = toy_values(n_cat, 30)
    g = draw_estimates("arsm", th.zeros(n_cat, dtype=th.float64), f, repeats, gen)
    before = th.softmax(th.zeros(n_cat, dtype=th.float64), dim=0) @ f
    after = th.softmax(1.0 * g, dim=1) @ f
    assert float((after - before).mean()) > 0


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
]


@pytest.mark.parametrize(("call", "message"), [(c, m) for _, c, m in BAD_CALLS], ids=[i for i, _, _ in BAD_CALLS])
def test_validation(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError) as info:
        call()
    assert message in str(info.value)
