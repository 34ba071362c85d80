"""Extra Gymnasium environments of the project, registered under the ``arsm`` namespace on import."""

import gymnasium as gym

from envs.tabular import RandomMDP

__all__ = ["RandomMDP"]

if "arsm/RandomMDP-v0" not in gym.registry:
    gym.register(id="arsm/RandomMDP-v0", entry_point="envs.tabular:RandomMDP")
