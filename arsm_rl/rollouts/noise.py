"""Each pseudo rollout's own noise stream, so that its actions do not depend on which rollouts run beside it.

This module imports neither torch nor SB3 (see :mod:`arsm_rl.rollouts.race`).
"""

from __future__ import annotations

import numpy as np

from arsm_rl.coding import ActionCoding

__all__ = ["RolloutNoise"]


class RolloutNoise:
    """
    Each rollout's own noise stream: rollout ``r`` of an update draws its flat-Dirichlet noise from a generator
    seeded with ``SeedSequence([entropy, r])``, in blocks of :attr:`BLOCK` steps, so that its noise at a depth
    does not depend on which other rollouts run with it, in which order, process or batch.

    :param actions: the action coding
    :param entropy: the update's seed (one draw from the pseudo-rollout stream)
    :param n_rollouts: number of rollouts of the update
    """

    #: steps of noise drawn at a time per rollout
    BLOCK = 32

    def __init__(self, actions: ActionCoding, entropy: int, n_rollouts: int) -> None:
        self.actions = actions
        self.entropy = entropy
        k, c = actions.valid_categories.shape
        self._generators: dict[int, np.random.Generator] = {}
        self._blocks = np.empty((n_rollouts, self.BLOCK, k, c), dtype=np.float32)
        self._drawn = np.full(n_rollouts, -1, dtype=np.int64)  # index of the last block drawn, per rollout

    def __setstate__(self, state: dict[str, object]) -> None:
        # writable copies: transports such as Ray's object store hand arrays over read-only
        self.__dict__.update(state)
        self._blocks = np.array(self._blocks)
        self._drawn = np.array(self._drawn)

    def draw(self, ids: np.ndarray, depth: int) -> np.ndarray:
        """
        :param ids: rollout indices
        :param depth: the step of those rollouts (0 for their first action)
        :return: ``(len(ids), K, C)`` float32 noise of each rollout at that step
        """
        block = depth // self.BLOCK
        for r in ids[self._drawn[ids] < block].tolist():
            generator = self._generators.get(r)
            if generator is None:
                generator = self._generators[r] = np.random.default_rng(np.random.SeedSequence([self.entropy, r]))
            while self._drawn[r] < block:  # blocks in order, whatever depths were asked for
                self._blocks[r] = self.actions.noise(generator, self.BLOCK)
                self._drawn[r] += 1
        return self._blocks[ids, depth % self.BLOCK]
