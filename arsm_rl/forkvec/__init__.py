"""``ForkVecEnv``: sub-envs in light worker processes whose snapshots are paused ``fork`` copies.

:mod:`~arsm_rl.forkvec.vec_env` is the trainer's side (the ``VecEnv``, snapshot handles, connections to restored
copies); :mod:`~arsm_rl.forkvec.server` is the processes' side and imports neither torch nor SB3, which is why this
package's ``__init__`` imports nothing: import ``ForkVecEnv`` from ``arsm_rl`` or ``arsm_rl.forkvec.vec_env``.
"""
