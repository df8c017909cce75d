"""Check an exported ``.hpz`` file against the run it came from, on the run's own held-out evaluation
episodes: the exported actors choose the actions while the trained actors step beside them on the
same inputs, so every logit and every action can be compared, and the episode reward set against
the trained actors' evaluation of the same episodes."""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from hapruned.deploy.actor import load_actors
from hapruned.nn import sample_actions
from hapruned.deploy.hpz import read_hpz


def replay_evaluation(run_dir, path, episodes: int | None = None, greedy: bool | None = None,
                      progress: bool = False) -> dict:
    """Replay the held-out evaluation of the run in ``run_dir`` (``IAGCPPO.evaluate``: the same episodes,
    the same uniform draws) with the actors of the ``.hpz`` file at ``path`` choosing the actions of
    their agents, and the trained actors of the file's training seed those of the agents it lacks.

    episodes: default the run's ``eval_episodes``; greedy: default its ``eval_greedy``. Returns
    ``max_logit_diff`` (the largest |exported - trained| logit over every step), ``different_actions``
    (decisions where the trained actor, with the same draw, would have acted otherwise) out of
    ``decisions``, the mean episode ``reward`` and the trained actors' ``trained_reward``.
    """
    from hapruned.algos import IAGCPPO
    from hapruned.algos.trainer import eval_seed
    from hapruned.deploy.export import read_run
    from hapruned.env import BatchedDSAEnv, encode_env_observations
    from hapruned.env.rng import seed_states

    config, checkpoint = read_run(run_dir)
    algo = IAGCPPO(config)
    algo.load_state_dict(checkpoint["algo"])
    metadata, _ = read_hpz(path)
    exported = {actor.agent: actor for actor in load_actors(path)}
    episodes = algo.config.eval_episodes if episodes is None else episodes
    greedy = algo.config.eval_greedy if greedy is None else greedy
    S, N, T = algo.S, algo.N, algo.env_config.horizon
    seed_index = algo.seeds.index(metadata["source"]["seed"])
    held_out = eval_seed(algo.seeds[0])
    env = BatchedDSAEnv(algo.env_config, episodes, copy=False)
    env.rng_states = seed_states(held_out, episodes)  # every training seed plays these episodes
    generator = torch.Generator().manual_seed(held_out)
    for actor in exported.values():
        actor.reset(episodes)
    obs, state, rewards = env.reset(), None, np.zeros(episodes)
    max_diff, different = 0.0, 0
    for _ in tqdm(range(T), desc="replay", unit="step", disable=not progress):
        features = encode_env_observations(algo.env_config, obs, env.observed_rate)  # (episodes, N, F)
        x = torch.from_numpy(features).transpose(0, 1).repeat(S, 1, 1)  # the inputs of every seed's groups
        with torch.inference_mode():
            logits, state = algo.actor(x.unsqueeze(0), state)
        actions = np.zeros((episodes, N), dtype=np.int64)
        # the draws in the order evaluate makes them: group by group, (seed, agent) seed-major
        for group in range(S * N):
            seed, agent = divmod(group, N)
            trained = logits[0, group]
            if seed != seed_index:
                sample_actions(trained, greedy, generator)  # another seed's draw
                continue
            if agent not in exported:
                actions[:, agent] = sample_actions(trained, greedy, generator).numpy()
                continue
            before = torch.Generator().set_state(generator.get_state())
            actor_logits = exported[agent].logits(features[:, agent])
            actions[:, agent] = sample_actions(actor_logits, greedy, generator).numpy()
            max_diff = max(max_diff, (actor_logits - trained).abs().max().item())
            different += int((sample_actions(trained, greedy, before).numpy() != actions[:, agent]).sum())
        obs, reward, _, _ = env.step(actions)
        rewards += reward
    trained_reward = algo.evaluate(episodes, held_out, greedy=greedy)[seed_index]
    return {
        "episodes": episodes, "greedy": greedy, "seed": algo.seeds[seed_index], "agents": sorted(exported),
        "max_logit_diff": max_diff, "different_actions": different, "decisions": T * episodes * len(exported),
        "reward": float(rewards.mean()), "trained_reward": float(trained_reward),
    }
