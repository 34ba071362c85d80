"""Extra Gymnasium environments of the project, registered under the ``arsm`` namespace on import."""

import gymnasium as gym

from envs.tabular import RandomMDP

__all__ = ["RandomMDP"]

if "arsm/RandomMDP-v0" not in gym.registry:
    gym.register(id="arsm/RandomMDP-v0", entry_point="envs.tabular:RandomMDP")
if "arsm/MaskedTaxi-v0" not in gym.registry:  # Taxi-v4 with its action mask (sb3-contrib's ActionMasker)
    gym.register(id="arsm/MaskedTaxi-v0", entry_point="envs.masked:masked_taxi", max_episode_steps=200)
