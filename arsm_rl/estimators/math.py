"""The estimators' math: gradient estimators for a categorical distribution, with respect to its logits.

Paper: ARSM: Augment-REINFORCE-Swap-Merge Estimator for Gradient Backpropagation Through Categorical
Variables, Mingzhang Yin, Yuguang Yue and Mingyuan Zhou, ICML 2019. https://arxiv.org/abs/1905.01413

Every function estimates (or computes) the ascent direction ``d E_{z ~ Cat(softmax(logits))}[f(z)] / d logits``
for one categorical variable per batch row. Arguments are batch-first: ``B`` rows, ``C`` categories. The
functions are pure tensor math: no randomness, no environment, no module state. Callers draw the flat
Dirichlet noise ``pi ~ Dir(1_C)`` themselves, for instance as normalised Exp(1) draws.

The ARSM recipe:

1. ``race_actions`` turns logits and Dirichlet noise into the true action ``z = argmin_i (ln pi_i - logits_i)``
   (an exponential race, identical in law to sampling from ``softmax(logits)``).
2. ``swap_pseudo_actions`` gives the pseudo action for every swap ``(m, j)`` of two noise coordinates.
3. ``distinct_pseudo_actions`` marks the actions that need a function evaluation; the caller evaluates them
   and ``gather_pseudo_values`` spreads the values back over the swap matrix. (The ARSM algorithm works with
   joint codes of MultiDiscrete actions and does the same in index form, :func:`arsm_rl.actions.distinct_codes`,
   which reduces to these two for one dimension; tested.)
4. ``arsm_gradient`` (or ``ars_gradient``) merges them into the estimate.

``ar_gradient``, ``reinforce_gradient``, ``rloo_gradient`` and ``all_action_gradient`` are the reference
estimators the paper and its follow-ups compare against; ``exact_gradient`` is the ground truth, by autograd.

Centring differences are taken relative to one of the values being centred, so that equal values give an
exact zero gradient in floating point (not just zero up to rounding).
"""

from __future__ import annotations

import torch as th

__all__ = [
    "all_action_gradient",
    "ar_gradient",
    "ars_gradient",
    "arsm_gradient",
    "distinct_pseudo_actions",
    "exact_gradient",
    "gather_pseudo_values",
    "race_actions",
    "reinforce_gradient",
    "rloo_gradient",
    "swap_pseudo_actions",
]


def _check(fn: str, name: str, x: th.Tensor, dims: str, shape: tuple[int, ...], floating: bool) -> None:
    """Raise ``ValueError`` unless ``x`` has the expected shape and kind of dtype.

    :param fn: name of the calling public function, for the message.
    :param name: name of the argument, for the message.
    :param x: the tensor to check.
    :param dims: symbolic shape for the message, e.g. ``"(B, C)"``.
    :param shape: the expected concrete shape.
    :param floating: ``True`` for a floating-point tensor, ``False`` for an int64 (``th.long``) tensor.
    """
    if not isinstance(x, th.Tensor):
        raise ValueError(f"{fn}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if tuple(x.shape) != shape:
        raise ValueError(f"{fn}: {name} must have shape {dims} = {shape}, got {tuple(x.shape)}")
    if floating and not x.is_floating_point():
        raise ValueError(f"{fn}: {name} must be a floating-point tensor, got dtype {x.dtype}")
    if not floating and x.dtype != th.long:
        raise ValueError(f"{fn}: {name} must have dtype torch.int64, got {x.dtype}")


def _check_matrix(fn: str, name: str, x: th.Tensor) -> tuple[int, int]:
    """Check that ``x`` is a floating-point ``(B, C)`` tensor with ``C >= 2`` and return ``(B, C)``.

    :param fn: name of the calling public function, for the message.
    :param name: name of the argument, for the message.
    :param x: the tensor to check.
    :return: the batch size ``B`` and the number of categories ``C``.
    """
    if not isinstance(x, th.Tensor) or x.ndim != 2:
        got = tuple(x.shape) if isinstance(x, th.Tensor) else type(x).__name__
        raise ValueError(f"{fn}: {name} must have shape (B, C), got {got}")
    batch, n_cat = x.shape
    if n_cat < 2:
        raise ValueError(f"{fn}: {name} must have at least C = 2 categories, got shape {tuple(x.shape)}")
    _check(fn, name, x, "(B, C)", (batch, n_cat), floating=True)
    return batch, n_cat


def _check_same_dtype(fn: str, *named: tuple[str, th.Tensor]) -> None:
    """Raise ``ValueError`` unless all the named floating-point tensors share one dtype.

    :param fn: name of the calling public function, for the message.
    :param named: ``(name, tensor)`` pairs.
    """
    dtypes = {x.dtype for _, x in named}
    if len(dtypes) > 1:
        listing = ", ".join(f"{name}: {x.dtype}" for name, x in named)
        raise ValueError(f"{fn}: floating-point arguments must share one dtype, got {listing}")


def _check_swaps(fn: str, swaps: th.Tensor) -> tuple[int, int]:
    """Check that ``swaps`` is an int64 ``(B, C, C)`` tensor and return ``(B, C)``.

    :param fn: name of the calling public function, for the message.
    :param swaps: the swap matrix to check.
    :return: the batch size ``B`` and the number of categories ``C``.
    """
    if not isinstance(swaps, th.Tensor) or swaps.ndim != 3 or swaps.shape[1] != swaps.shape[2]:
        got = tuple(swaps.shape) if isinstance(swaps, th.Tensor) else type(swaps).__name__
        raise ValueError(f"{fn}: swaps must have shape (B, C, C), got {got}")
    batch, n_cat, _ = swaps.shape
    _check(fn, "swaps", swaps, "(B, C, C)", (batch, n_cat, n_cat), floating=False)
    return batch, n_cat


def _second_wins(value_a: th.Tensor, index_a: th.Tensor, value_b: th.Tensor, index_b: th.Tensor) -> th.Tensor:
    """Whether candidate b beats candidate a in an argmin, ties going to the lower index like ``th.argmin``.

    :param value_a: values of the first candidate, any shape broadcastable with the others.
    :param index_a: indices of the first candidate.
    :param value_b: values of the second candidate.
    :param index_b: indices of the second candidate.
    :return: boolean tensor of the broadcast shape, ``True`` where b wins.
    """
    return (value_b < value_a) | ((value_b == value_a) & (index_b < index_a))


def race_actions(logits: th.Tensor, pi: th.Tensor) -> th.Tensor:
    """Winner of the exponential race: ``z = argmin_i (ln pi_i - logits_i)`` (the paper's augmentation step).

    With ``pi ~ Dir(1_C)`` the result is distributed as ``Cat(softmax(logits))``. Ties go to the lowest index.

    :param logits: unnormalised log-probabilities, shape ``(B, C)``.
    :param pi: Dirichlet noise on the simplex, shape ``(B, C)``, same dtype as ``logits``.
    :return: the true actions, int64, shape ``(B,)``.
    """
    batch, n_cat = _check_matrix("race_actions", "logits", logits)
    _check("race_actions", "pi", pi, "(B, C)", (batch, n_cat), floating=True)
    _check_same_dtype("race_actions", ("logits", logits), ("pi", pi))
    return th.argmin(th.log(pi) - logits, dim=1)


def swap_pseudo_actions(logits: th.Tensor, pi: th.Tensor) -> th.Tensor:
    """Pseudo actions ``z^{m<->j} = argmin_i (ln pi^{m<->j}_i - logits_i)`` for every swap (the paper's swap step).

    ``pi^{m<->j}`` is ``pi`` with coordinates ``m`` and ``j`` swapped. The result is symmetric in ``(m, j)`` and its
    diagonal is the true action. It is computed without a ``C^3`` tensor: a swap changes the race values only at
    ``m`` and ``j``, so the winner is the better of ``m``, ``j`` and the best untouched coordinate. That coordinate
    is the true action ``z`` unless ``z`` is in ``{m, j}``; the row and column of ``z`` are then redone with the
    best coordinate other than ``z`` and the partner. Ties go to the lowest index, exactly as ``th.argmin`` on the
    swapped vector. Memory and time are ``O(B C^2)``.

    :param logits: unnormalised log-probabilities, shape ``(B, C)``.
    :param pi: Dirichlet noise on the simplex, shape ``(B, C)``, same dtype as ``logits``.
    :return: the swap matrix, int64, shape ``(B, C, C)``; entry ``[b, m, j]`` is the pseudo action of swap ``(m, j)``.
    """
    batch, n_cat = _check_matrix("swap_pseudo_actions", "logits", logits)
    _check("swap_pseudo_actions", "pi", pi, "(B, C)", (batch, n_cat), floating=True)
    _check_same_dtype("swap_pseudo_actions", ("logits", logits), ("pi", pi))
    log_pi = th.log(pi)  # [B, C]
    race = log_pi - logits  # [B, C]
    # after swap (m, j): value at m is ln pi_j - logits_m = moved[b, m, j], value at j is moved[b, j, m]
    moved = log_pi[:, None, :] - logits[:, :, None]  # [B, C, C]
    categories = th.arange(n_cat, device=logits.device)
    j_wins = _second_wins(moved, categories[:, None], moved.transpose(1, 2), categories[None, :])  # [B, C, C]
    value = th.where(j_wins, moved.transpose(1, 2), moved)
    index = th.where(j_wins, categories[None, :], categories[:, None])

    # the three best coordinates of the unswapped race, in argmin order, padded with +inf when C = 2
    order = th.sort(race, dim=1, stable=True).indices[:, :3]  # [B, min(C, 3)]
    best_value = race.gather(1, order)
    if n_cat == 2:
        best_value = th.cat([best_value, th.full_like(best_value[:, :1], float("inf"))], dim=1)
        order = th.cat([order, th.full_like(order[:, :1], n_cat)], dim=1)
    true = order[:, 0]  # [B]

    # swaps that leave z untouched: z keeps its value and wins unless m or j now beats it
    z_wins = _second_wins(value, index, best_value[:, 0, None, None], true[:, None, None])
    swaps = th.where(z_wins, true[:, None, None], index)

    # swaps (z, j): the best untouched coordinate is the runner-up, or the third if j is the runner-up
    runner_up_is_partner = order[:, 1, None] == categories  # [B, C]
    rest_value = th.where(runner_up_is_partner, best_value[:, 2, None], best_value[:, 1, None])
    rest_index = th.where(runner_up_is_partner, order[:, 2, None], order[:, 1, None])
    rows = th.arange(batch, device=logits.device)
    value_at_z, value_at_j = moved[rows, true], moved[rows, :, true]  # [B, C] each
    j_wins_z = _second_wins(value_at_z, true[:, None], value_at_j, categories[None, :])
    value_z = th.where(j_wins_z, value_at_j, value_at_z)
    index_z = th.where(j_wins_z, categories[None, :], true[:, None])
    row_z = th.where(_second_wins(rest_value, rest_index, value_z, index_z), index_z, rest_index)  # [B, C]
    swaps[rows, true] = row_z
    swaps[rows, :, true] = row_z
    return swaps


def distinct_pseudo_actions(swaps: th.Tensor) -> th.Tensor:
    """Mark the actions that appear anywhere in each row's swap matrix (the paper evaluates each once).

    :param swaps: swap matrix from ``swap_pseudo_actions``, int64, shape ``(B, C, C)``.
    :return: boolean mask, shape ``(B, C)``; ``[b, a]`` is ``True`` when action ``a`` occurs in ``swaps[b]``.
        The true action is always marked.
    """
    batch, n_cat = _check_swaps("distinct_pseudo_actions", swaps)
    mask = th.zeros(batch, n_cat, dtype=th.bool, device=swaps.device)
    return mask.scatter_(1, swaps.reshape(batch, -1), True)


def gather_pseudo_values(swaps: th.Tensor, q: th.Tensor) -> th.Tensor:
    """Spread per-action values over the swap matrix: ``f[b, m, j] = q[b, swaps[b, m, j]]``.

    Entries of ``q`` for actions absent from row ``b`` of ``swaps`` are never read, so they may hold anything
    (for instance NaN for actions that were not evaluated).

    :param swaps: swap matrix from ``swap_pseudo_actions``, int64, shape ``(B, C, C)``.
    :param q: value of each action, shape ``(B, C)``.
    :return: the pseudo-action values ``F``, shape ``(B, C, C)``, dtype of ``q``.
    """
    batch, n_cat = _check_swaps("gather_pseudo_values", swaps)
    _check("gather_pseudo_values", "q", q, "(B, C)", (batch, n_cat), floating=True)
    return q.gather(1, swaps.reshape(batch, -1)).reshape(batch, n_cat, n_cat)


def _centre_columns(f: th.Tensor) -> th.Tensor:
    """``f[b, m, j] - mean_m f[b, m, j]``, computed relative to the diagonal so equal columns give exact zeros.

    :param f: pseudo-action values, shape ``(B, C, C)``.
    :return: column-centred values, shape ``(B, C, C)``.
    """
    shifted = f - f.diagonal(dim1=1, dim2=2)[:, None, :]  # [B, C, C]
    return shifted - shifted.mean(dim=1, keepdim=True)


def arsm_gradient(pi: th.Tensor, f: th.Tensor) -> th.Tensor:
    """ARSM estimate, the paper's merge over all references: ``g_c = sum_j (f[c, j] - mean_m f[m, j]) (1/C - pi_j)``.

    In matrix form ``g = (F - 1 Fbar^T)(1/C - pi)``. Each estimate sums to zero over categories and is exactly
    zero when every pseudo action has the value of the true action.

    :param pi: the Dirichlet noise that produced the actions, shape ``(B, C)``.
    :param f: values of the pseudo actions, ``f[b, m, j] = f(z^{m<->j})``, shape ``(B, C, C)``, dtype of ``pi``.
    :return: the estimate of ``d E[f(z)] / d logits``, shape ``(B, C)``.
    """
    batch, n_cat = _check_matrix("arsm_gradient", "pi", pi)
    _check("arsm_gradient", "f", f, "(B, C, C)", (batch, n_cat, n_cat), floating=True)
    _check_same_dtype("arsm_gradient", ("pi", pi), ("f", f))
    weight = 1.0 / n_cat - pi  # [B, C]
    return th.bmm(_centre_columns(f), weight.unsqueeze(2)).squeeze(2)


def ars_gradient(pi: th.Tensor, f: th.Tensor, ref: th.Tensor) -> th.Tensor:
    """ARS estimate with one reference category ``j = ref``: ``g_c = (f[c, j] - mean_m f[m, j]) (1 - C pi_j)``.

    Unbiased for any reference chosen independently of ``pi`` (the paper draws it uniformly).

    :param pi: the Dirichlet noise that produced the actions, shape ``(B, C)``.
    :param f: values of the pseudo actions, ``f[b, m, j] = f(z^{m<->j})``, shape ``(B, C, C)``, dtype of ``pi``;
        only column ``ref[b]`` of row ``b`` is read.
    :param ref: reference category of each row, int64, shape ``(B,)``.
    :return: the estimate of ``d E[f(z)] / d logits``, shape ``(B, C)``.
    """
    batch, n_cat = _check_matrix("ars_gradient", "pi", pi)
    _check("ars_gradient", "f", f, "(B, C, C)", (batch, n_cat, n_cat), floating=True)
    _check("ars_gradient", "ref", ref, "(B,)", (batch,), floating=False)
    _check_same_dtype("ars_gradient", ("pi", pi), ("f", f))
    rows = th.arange(batch, device=f.device)
    column = f[rows, :, ref]  # [B, C]: f(z^{c<->ref})
    shifted = column - f[rows, ref, ref][:, None]
    centred = shifted - shifted.mean(dim=1, keepdim=True)
    return centred * (1.0 - n_cat * pi[rows, ref])[:, None]


def ar_gradient(pi: th.Tensor, f_true: th.Tensor) -> th.Tensor:
    """AR estimate, REINFORCE on the race Rao-Blackwellised over ``pi``: ``g_c = f(z) (1 - C pi_c)``.

    The authors' toy scripts used ``(1 - pi_c)`` until a 2020 bug fix; this is the corrected, unbiased form.

    :param pi: the Dirichlet noise that produced the true action, shape ``(B, C)``.
    :param f_true: value of the true action ``f(z)``, shape ``(B,)``, dtype of ``pi``.
    :return: the estimate of ``d E[f(z)] / d logits``, shape ``(B, C)``.
    """
    batch, n_cat = _check_matrix("ar_gradient", "pi", pi)
    _check("ar_gradient", "f_true", f_true, "(B,)", (batch,), floating=True)
    _check_same_dtype("ar_gradient", ("pi", pi), ("f_true", f_true))
    return f_true[:, None] * (1.0 - n_cat * pi)


def reinforce_gradient(logits: th.Tensor, actions: th.Tensor, f_true: th.Tensor) -> th.Tensor:
    """REINFORCE without a baseline (Williams, 1992): ``g = f(z) (onehot(z) - softmax(logits))``.

    :param logits: unnormalised log-probabilities, shape ``(B, C)``.
    :param actions: sampled actions ``z``, int64, shape ``(B,)``.
    :param f_true: values ``f(z)``, shape ``(B,)``, dtype of ``logits``.
    :return: the estimate of ``d E[f(z)] / d logits``, shape ``(B, C)``.
    """
    batch, n_cat = _check_matrix("reinforce_gradient", "logits", logits)
    _check("reinforce_gradient", "actions", actions, "(B,)", (batch,), floating=False)
    _check("reinforce_gradient", "f_true", f_true, "(B,)", (batch,), floating=True)
    _check_same_dtype("reinforce_gradient", ("logits", logits), ("f_true", f_true))
    score = th.nn.functional.one_hot(actions, n_cat).to(logits.dtype) - th.softmax(logits, dim=1)
    return f_true[:, None] * score


def rloo_gradient(logits: th.Tensor, actions: th.Tensor, f: th.Tensor) -> th.Tensor:
    """REINFORCE with a leave-one-out baseline over ``K >= 2`` i.i.d. actions.

    Paper: Buy 4 REINFORCE Samples, Get a Baseline for Free!, Kool, van Hoof and Welling, ICLR 2019 workshop.
    ``g = 1/(K-1) sum_k (f_k - mean_l f_l) (onehot(a_k) - softmax(logits))``.

    :param logits: unnormalised log-probabilities, shape ``(B, C)``.
    :param actions: ``K`` independent actions per row, int64, shape ``(B, K)``.
    :param f: their values, shape ``(B, K)``, dtype of ``logits``.
    :return: the estimate of ``d E[f(z)] / d logits``, shape ``(B, C)``.
    """
    batch, _ = _check_matrix("rloo_gradient", "logits", logits)
    if not isinstance(actions, th.Tensor) or actions.ndim != 2 or actions.shape[1] < 2:
        got = tuple(actions.shape) if isinstance(actions, th.Tensor) else type(actions).__name__
        raise ValueError(f"rloo_gradient: actions must have shape (B, K) with K >= 2, got {got}")
    n_samples = actions.shape[1]
    _check("rloo_gradient", "actions", actions, "(B, K)", (batch, n_samples), floating=False)
    _check("rloo_gradient", "f", f, "(B, K)", (batch, n_samples), floating=True)
    _check_same_dtype("rloo_gradient", ("logits", logits), ("f", f))
    shifted = f - f[:, :1]
    advantage = (shifted - shifted.mean(dim=1, keepdim=True)) / (n_samples - 1)  # [B, K]
    counts = th.zeros_like(logits).scatter_add_(1, actions, advantage)  # [B, C]
    return counts - th.softmax(logits, dim=1) * advantage.sum(dim=1, keepdim=True)


def all_action_gradient(logits: th.Tensor, q: th.Tensor) -> th.Tensor:
    """Exact gradient from the values of all actions: ``g_c = p_c (q_c - sum_k p_k q_k)``, ``p = softmax(logits)``.

    This is the ground truth of the paper's toy experiment and the all-action / mean actor-critic policy gradient
    when ``q`` holds action values.

    :param logits: unnormalised log-probabilities, shape ``(B, C)``.
    :param q: value of every action, shape ``(B, C)``, dtype of ``logits``.
    :return: ``d E[q(z)] / d logits``, shape ``(B, C)``.
    """
    batch, n_cat = _check_matrix("all_action_gradient", "logits", logits)
    _check("all_action_gradient", "q", q, "(B, C)", (batch, n_cat), floating=True)
    _check_same_dtype("all_action_gradient", ("logits", logits), ("q", q))
    prob = th.softmax(logits, dim=1)
    shifted = q - q[:, :1]
    return prob * (shifted - (prob * shifted).sum(dim=1, keepdim=True))


def exact_gradient(logits: th.Tensor, q: th.Tensor) -> th.Tensor:
    """Exact ``d E[q(z)] / d logits`` by automatic differentiation of ``E[q(z)] = softmax(logits) . q``.

    The ground truth of the estimator tests and of the toy benchmark. It shares no code with
    :func:`all_action_gradient` (which applies the closed form ``p_c (q_c - p . q)``), so the two check each other.

    :param logits: unnormalised log-probabilities, shape ``(B, C)``.
    :param q: value of every action, shape ``(B, C)``, dtype of ``logits``.
    :return: ``d E[q(z)] / d logits``, shape ``(B, C)``.
    """
    batch, n_cat = _check_matrix("exact_gradient", "logits", logits)
    _check("exact_gradient", "q", q, "(B, C)", (batch, n_cat), floating=True)
    _check_same_dtype("exact_gradient", ("logits", logits), ("q", q))
    with th.enable_grad():
        leaf = logits.detach().requires_grad_(True)
        expected = (th.softmax(leaf, dim=1) * q.detach()).sum()  # rows are independent: the sum's gradient is per row
        (gradient,) = th.autograd.grad(expected, leaf)
    return gradient
