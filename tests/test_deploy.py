"""Deploying pruned actors: export of a run, the .hpz file and its errors, replay of the held-out
evaluation episodes with the exported actors, the NumPy path without torch, ONNX, the commands."""

import json
import shutil
import struct
import sys

import numpy as np
import pytest
import torch

from hapruned import ops
from hapruned.algos import IAGCPPO, TrainConfig
from hapruned.algos.models import GroupedActor
from hapruned.algos.trainer import checkpoint_digest, eval_seed, read_checkpoint, train
from hapruned.cli import main
from hapruned.deploy import ExportError, HpzError, export_actors, load_actors, observation_features, read_hpz
from hapruned.deploy.actor import dense_torch_actor
from hapruned.nn import sample_actions
from hapruned.deploy.export import actor_metadata, actor_weights, read_run, write_actors
from hapruned.deploy.numpy_actor import load_numpy_actors
from hapruned.deploy.verify import replay_evaluation
from hapruned.env import encode_observations
import processes

SEEDS = (3, 4)
# float16 weights (11-bit significands) move the logits of trained actors by at most this much (5.7e-4 measured
# on a 95%-sparse actor of the fast preset, about 1e-4 on the test runs);
# the float32 files must agree within 1e-5.
FLOAT16_LOGIT_TOLERANCE = 5e-3


def tiny_config(**overrides) -> TrainConfig:
    values = dict(n_users=3, n_channels=3, horizon=10, hidden_size=16, num_layers=2, iterations=6,
                  envs_per_iteration=4, minibatches=2, epochs=2, i_prune=2, method="harmonic", sparsity=0.8,
                  eval_every=3, eval_episodes=20, seeds=SEEDS, actor_lr=3e-3)
    return TrainConfig(**{**values, **overrides})


def pai_config() -> TrainConfig:
    """PaI: one weight set per seed shared by the agents under masks of their own."""
    values = {k: v for k, v in tiny_config().__dict__.items() if k not in ("i_prune", "method", "algo")}
    return TrainConfig.preset("paper", algo="pai", **values)


@pytest.fixture(scope="module", params=["masked", "regrow", "pai"])
def run_dir(request, tmp_path_factory):
    """A finished two-seed run (masks in masked mode, zeros in the weights in regrow mode, shared weights
    and fixed masks in PaI)."""
    out = tmp_path_factory.mktemp(f"run-{request.param}")
    train(pai_config() if request.param == "pai" else tiny_config(prune_mode=request.param), out, progress=False)
    return out


def trained(run_dir) -> IAGCPPO:
    config, checkpoint = read_run(run_dir)
    algo = IAGCPPO(config)
    algo.load_state_dict(checkpoint["algo"])
    return algo


def effective_weights(algo: IAGCPPO, group: int) -> list[np.ndarray]:
    """[W_ih | W_hh] of each layer and the head of one group, masks applied, as the training computes them."""
    lstm, head = algo.actor.lstm, algo.actor.head

    def masked(module, name):
        weight, mask = module.per_group(getattr(module, name)), getattr(module, f"{name}_mask")
        return (weight if mask is None else weight * mask)[group].detach().numpy()

    layers = [np.concatenate([masked(lstm, f"weight_ih_l{k}"), masked(lstm, f"weight_hh_l{k}")], 1) for k in range(2)]
    return layers + [masked(head, "weight")]


@pytest.mark.parametrize("seed, agents", [(None, None), (4, [2, 0])])
def test_export_holds_the_effective_weights(run_dir, tmp_path, seed, agents):
    path = tmp_path / "actors.hpz"
    size = export_actors(run_dir, path, seed=seed, agents=agents)
    assert size == path.stat().st_size
    metadata, actors = read_hpz(path)
    algo = trained(run_dir)
    seed_index = SEEDS.index(seed if seed is not None else SEEDS[0])
    assert [a.agent for a in actors] == (agents or [0, 1, 2])
    assert metadata["source"]["seed"] == SEEDS[seed_index] and metadata["dtype"] == "float32"
    assert metadata["architecture"] == {"cell": "lstm", "input_size": 8, "hidden_size": 16, "num_layers": 2,
                                        "n_actions": 4, "gate_order": "ifgo"}
    assert metadata["environment"]["n_channels"] == 3 and metadata["encoding"]["feedback_codes"] == [0, 1, -1, -2]
    for actor in actors:
        group = seed_index * 3 + actor.agent
        expected = effective_weights(algo, group)
        matrices = [*actor.layers, actor.head]
        for matrix, weight in zip(matrices, expected):
            np.testing.assert_array_equal(matrix.to_dense(), weight)
            assert matrix.values.size == np.count_nonzero(weight)
            assert matrix.col_idx.dtype == np.uint8 and matrix.row_ptr.dtype in (np.uint8, np.uint16)
        bias = algo.actor.lstm.per_group(algo.actor.lstm.bias_l1)[group]
        np.testing.assert_array_equal(actor.layers[1].bias, bias.detach().numpy())
        zeros = sum(w.size - np.count_nonzero(w) for w in expected) / sum(w.size for w in expected)
        assert zeros == pytest.approx(0.8, abs=1e-3)  # the run's final sparsity


def test_float16_file_rounds_the_values(run_dir, tmp_path):
    export_actors(run_dir, tmp_path / "f32.hpz")
    export_actors(run_dir, tmp_path / "f16.hpz", dtype="float16")
    (_, full), (metadata, half) = read_hpz(tmp_path / "f32.hpz"), read_hpz(tmp_path / "f16.hpz")
    assert metadata["dtype"] == "float16"
    for a, b in zip(full, half):
        for m32, m16 in zip((*a.layers, a.head), (*b.layers, b.head)):
            assert m16.values.dtype == np.float16 and m16.bias.dtype == np.float16
            np.testing.assert_array_equal(m16.values, m32.values.astype(np.float16))
            np.testing.assert_array_equal(m16.col_idx, m32.col_idx)
    assert (tmp_path / "f16.hpz").stat().st_size < (tmp_path / "f32.hpz").stat().st_size


@pytest.mark.parametrize("greedy", [False, True], ids=["sampled", "greedy"])
@pytest.mark.parametrize("seed, agents", [(3, None), (4, None), (4, [2, 0])])
def test_replay_of_the_evaluation_gives_the_trained_actions(run_dir, tmp_path, seed, agents, greedy):
    """The exported actors (all, or some beside the trained ones) play the run's held-out episodes."""
    export_actors(run_dir, tmp_path / "actors.hpz", seed=seed, agents=agents)
    result = replay_evaluation(run_dir, tmp_path / "actors.hpz", greedy=greedy)
    print(result)
    assert result["seed"] == seed and result["agents"] == sorted(agents or [0, 1, 2])
    assert result["episodes"] == 20 and result["decisions"] == 10 * 20 * len(result["agents"])
    assert result["max_logit_diff"] <= 1e-5
    assert result["different_actions"] == 0
    assert result["reward"] == pytest.approx(result["trained_reward"], rel=1e-12)
    expected = trained(run_dir).evaluate(20, eval_seed(SEEDS[0]), greedy=greedy)[SEEDS.index(seed)]
    assert result["trained_reward"] == expected


def test_float16_replay_stays_within_tolerance(run_dir, tmp_path):
    export_actors(run_dir, tmp_path / "f16.hpz", dtype="float16")
    result = replay_evaluation(run_dir, tmp_path / "f16.hpz", episodes=200, greedy=False)
    print(result)
    assert 0 < result["max_logit_diff"] <= FLOAT16_LOGIT_TOLERANCE
    assert abs(result["reward"] - result["trained_reward"]) <= 0.01 * abs(result["trained_reward"])


def test_batch_and_single_forms_agree(run_dir, tmp_path):
    """B environments at once give each environment's single-environment logits; reset starts over."""
    export_actors(run_dir, tmp_path / "actors.hpz")
    batched, single = load_actors(tmp_path / "actors.hpz")[1], load_actors(tmp_path / "actors.hpz")[1]
    rng = np.random.default_rng(0)
    steps = [observation_features(rng.integers(0, 4, 5), rng.choice([0, 1, -1, -2], 5), 3) for _ in range(4)]
    batched.reset(5)
    outputs = [batched.logits(f) for f in steps]
    for b in range(5):
        single.reset()
        for f, out in zip(steps, outputs):
            torch.testing.assert_close(single.logits(f[b]), out[b], atol=1e-6, rtol=1e-6)
    batched.reset(5)
    torch.testing.assert_close(batched.logits(steps[0]), outputs[0], atol=0, rtol=0)


@pytest.mark.parametrize("greedy", [False, True])
def test_act_samples_the_step_logits(run_dir, tmp_path, greedy):
    export_actors(run_dir, tmp_path / "actors.hpz")
    acting, twin = load_actors(tmp_path / "actors.hpz")[0], load_actors(tmp_path / "actors.hpz")[0]
    acting.reset(50)
    twin.reset(50)
    generator, twin_generator = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    for action, feedback in [(0, 0), (1, 1), (3, -1)]:
        features = observation_features(np.full(50, action), np.full(50, feedback), 3)
        actions = acting.act(features, greedy=greedy, generator=generator)
        assert actions.shape == (50,) and actions.dtype == torch.int64
        torch.testing.assert_close(actions, sample_actions(twin.logits(features), greedy, twin_generator))
    assert acting.act(observation_features(0, 0, 3)[None].repeat(50, 0)).shape == (50,)


def test_numpy_actor_matches_sparse_actor(run_dir, tmp_path):
    for dtype in ("float32", "float16"):
        export_actors(run_dir, tmp_path / f"{dtype}.hpz", dtype=dtype)
        sparse, numpy_actors = load_actors(tmp_path / f"{dtype}.hpz"), load_numpy_actors(tmp_path / f"{dtype}.hpz")
        rng = np.random.default_rng(1)
        for a, b in zip(sparse, numpy_actors):
            a.reset(4)
            b.reset(4)
            for _ in range(6):
                features = observation_features(rng.integers(0, 4, 4), rng.choice([0, 1, -1, -2], 4), 3)
                expected = a.logits(features).numpy()
                np.testing.assert_allclose(b.logits(features), expected, atol=1e-5, rtol=0)
            np.testing.assert_array_equal(b.act(features, greedy=True), expected.argmax(-1))


def test_empty_rows_and_the_dense_twin(tmp_path):
    """Rows without a nonzero (a whole unit's gate pruned) in every path: SparseActor, NumpyActor and the
    dense nn.LSTM twin give the same logits."""
    actor = GroupedActor(1, 8, 16, 2, 4)
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0", "weight_ih_l1", "weight_hh_l1"):
            getattr(actor.lstm, name)[0, [0, 5, 17, 63]] = 0  # first, middle and last rows of gates i, f, o
    metadata = actor_metadata(tiny_config(), seed=0, iteration=None)
    weights = actor_weights(actor.state_dict(), {0: 0}, num_layers=2)
    assert all(np.flatnonzero(np.diff(m.row_ptr) == 0).tolist() == [0, 5, 17, 63] for m in weights[0].layers)
    write_actors(tmp_path / "actors.hpz", metadata, weights)
    sparse, numpy_actor = load_actors(tmp_path / "actors.hpz")[0], load_numpy_actors(tmp_path / "actors.hpz")[0]
    lstm, head = dense_torch_actor(weights[0], metadata)
    for batch in (1, 3):
        sparse.reset(batch)
        numpy_actor.reset(batch)
        state = None
        for action, feedback in [(0, 0), (1, 1), (3, -2), (2, -1)]:
            features = observation_features(np.full(batch, action), np.full(batch, feedback), 3)
            with torch.no_grad():
                y, state = lstm(torch.from_numpy(features)[None], state)
                expected = head(y[0])
            torch.testing.assert_close(sparse.logits(features), expected, atol=1e-5, rtol=0)
            np.testing.assert_allclose(numpy_actor.logits(features), expected.numpy(), atol=1e-5, rtol=0)


def test_numpy_path_runs_without_torch_and_numba(run_dir, tmp_path):
    """In an interpreter where torch and numba cannot be imported, the NumPy path loads the file and gives
    SparseActor's logits."""
    path = tmp_path / "actors.hpz"
    export_actors(run_dir, path, dtype="float16")
    script = (
        "import json, sys\n"
        "sys.modules['torch'] = None\n"  # any import of torch or numba now raises ImportError
        "sys.modules['numba'] = None\n"
        "from hapruned.deploy import observation_features\n"
        "from hapruned.deploy.numpy_actor import load_numpy_actors\n"
        f"actors = load_numpy_actors({str(path)!r})\n"
        "out = []\n"
        "for action, feedback in [(0, 0), (2, 1), (2, -1), (1, -2), (3, 1)]:\n"
        "    features = observation_features(action, feedback, actors[0].n_channels)\n"
        "    out.append([actor.logits(features).tolist() for actor in actors])\n"
        "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n"
        "print(json.dumps(out))\n"
    )
    result = processes.run([sys.executable, "-c", script], timeout=120)
    assert result.returncode == 0, result.stderr
    numpy_logits = np.array(json.loads(result.stdout))
    actors = load_actors(path)
    for t, (action, feedback) in enumerate([(0, 0), (2, 1), (2, -1), (1, -2), (3, 1)]):
        for a, actor in enumerate(actors):
            expected = actor.logits(observation_features(action, feedback, 3)).numpy()
            np.testing.assert_allclose(numpy_logits[t, a], expected, atol=1e-5, rtol=0)


def test_onnx_graph_gives_the_same_logits(run_dir, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    export_actors(run_dir, tmp_path / "actors.onnx", format="onnx", agents=[2, 0], seed=4)
    export_actors(run_dir, tmp_path / "actors.hpz", agents=[2, 0], seed=4)
    actors = load_actors(tmp_path / "actors.hpz")
    session = ort.InferenceSession(str(tmp_path / "actors.onnx"), providers=["CPUExecutionProvider"])
    batch = 3
    for actor in actors:
        actor.reset(batch)
    h = np.zeros((2, 2, batch, 16), dtype=np.float32)
    c = np.zeros_like(h)
    rng = np.random.default_rng(2)
    for _ in range(6):
        features = observation_features(rng.integers(0, 4, (2, batch)), rng.choice([0, 1, -1, -2], (2, batch)), 3)
        logits, h, c = session.run(None, {"features": features, "h": h, "c": c})
        for i, actor in enumerate(actors):
            np.testing.assert_allclose(logits[i], actor.logits(features[i]).numpy(), atol=1e-5, rtol=0)


def test_file_size_of_a_95_percent_actor(tmp_path):
    """The paper's actor (2 x 128, K = 5) pruned to 95%: the file is at most 1/10 (float32) and 1/15
    (float16) of torch.save of the dense actor's state_dict."""
    config = TrainConfig(n_users=1)
    actor = GroupedActor(1, 10, 128, 2, 6)
    names = actor.prunable_names
    with torch.no_grad():
        weights = [actor.get_parameter(name) for name in names]
        keep = ops.magnitude_prune_mask(torch.cat([w.flatten(1) for w in weights], 1), 0.95)
        for w, k in zip(weights, keep.split([w[0].numel() for w in weights], 1)):
            w.mul_(k.view_as(w))
    metadata = actor_metadata(config, seed=0, iteration=None)
    actors = actor_weights(actor.state_dict(), {0: 0}, num_layers=2)
    lstm, head = dense_torch_actor(actors[0], metadata)
    torch.save({"lstm": lstm.state_dict(), "head": head.state_dict()}, tmp_path / "dense.pt")
    dense = (tmp_path / "dense.pt").stat().st_size
    for dtype, bound in (("float32", 1 / 10), ("float16", 1 / 15)):
        size = write_actors(tmp_path / f"{dtype}.hpz", metadata, actors, dtype=dtype)
        print(f"{dtype}: {size} bytes, dense {dense}: 1/{dense / size:.1f}")
        assert size <= bound * dense


def test_observation_features_is_the_training_encoding():
    actions, feedback = np.array([[0, 3], [2, 1]]), np.array([[0, -2], [1, -1]])
    np.testing.assert_array_equal(observation_features(actions, feedback, 3),
                                  encode_observations(np.stack([actions, feedback], -1), 3))
    np.testing.assert_array_equal(observation_features(2, -1, 3), [0, 0, 1, 0, 0, 0, 1, 0])


def test_actor_input_errors(run_dir, tmp_path):
    export_actors(run_dir, tmp_path / "actors.hpz")
    actor = load_actors(tmp_path / "actors.hpz")[0]
    with pytest.raises(ValueError, match=r"features must be \(8,\) for batch 1"):
        actor.logits(np.zeros(7, dtype=np.float32))
    actor.reset(2)
    with pytest.raises(ValueError, match="batch=2"):
        actor.logits(np.zeros(8, dtype=np.float32))
    with pytest.raises(ValueError, match="batch must be an integer >= 1"):
        actor.reset(0)


def _rewrite(path, change):
    data = bytearray(path.read_bytes())
    change(data)
    path.write_bytes(bytes(data))


BAD_FILES = [
    ("truncated in the payload", lambda d: d.__delitem__(slice(len(d) // 2, None)), "is truncated"),
    ("truncated in the header", lambda d: d.__delitem__(slice(12, None)), "is truncated"),
    ("last byte missing", lambda d: d.__delitem__(slice(-1, None)), "is truncated"),
    ("a payload byte flipped", lambda d: d.__setitem__(-100, d[-100] ^ 0x10), "corrupted: its checksum"),
    ("a header byte flipped", lambda d: d.__setitem__(40, d[40] ^ 0x01), "corrupted: its checksum"),
    ("bytes appended", lambda d: d.extend(b"\0\0"), "corrupted: 2 bytes past its end"),
    ("newer version", lambda d: d.__setitem__(slice(8, 12), struct.pack("<I", 2)), "format version 2, newer than"),
    ("not an hpz file", lambda d: d.__setitem__(slice(0, 8), b"PK\x03\x04abcd"), "is not an .hpz file"),
]


@pytest.mark.parametrize("change, message", [b[1:] for b in BAD_FILES], ids=[b[0] for b in BAD_FILES])
def test_unreadable_files_raise_a_clear_error(run_dir, tmp_path, change, message):
    path = tmp_path / "actors.hpz"
    export_actors(run_dir, path)
    _rewrite(path, change)
    for load in (read_hpz, load_actors, load_numpy_actors):
        with pytest.raises(HpzError, match=message):
            load(path)


def test_export_errors(run_dir, tmp_path):
    with pytest.raises(ExportError, match="seed must be one of the run's training seeds"):
        export_actors(run_dir, tmp_path / "a.hpz", seed=5)
    with pytest.raises(ExportError, match=r"agents must be distinct indices in 0..2"):
        export_actors(run_dir, tmp_path / "a.hpz", agents=[0, 3])
    with pytest.raises(ExportError, match="has no config.json"):
        export_actors(tmp_path, tmp_path / "a.hpz")
    other = tmp_path / "dqn-run"
    shutil.copytree(run_dir, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "algo": "dqn"}))
    with pytest.raises(ExportError, match="actors of actor-critic runs .* has algo='dqn'"):
        export_actors(other, tmp_path / "a.hpz")
    (other / "config.json").write_text(json.dumps(config))
    checkpoint = read_checkpoint(other / "checkpoint.pt")
    del checkpoint["algo"]["actor"]["head.weight"]
    checkpoint["digest"] = checkpoint_digest(checkpoint)  # a well-formed checkpoint without an actor
    torch.save(checkpoint, other / "checkpoint.pt")
    with pytest.raises(ExportError, match="holds no actor"):
        export_actors(other, tmp_path / "a.hpz")
    (other / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ExportError, match="checkpoint.pt' is damaged"):
        export_actors(other, tmp_path / "a.hpz")


def test_export_command(run_dir, tmp_path, capsys):
    out = tmp_path / "cli.hpz"
    flags = ["--dtype", "float16", "--agents", "0,2", "--seed", "4", "--verify", "--json"]
    assert main(["export", str(run_dir), "--out", str(out), *flags]) == 0
    summary = json.loads(capsys.readouterr().out)
    metadata, actors = read_hpz(out)
    assert summary["bytes"] == out.stat().st_size and summary["agents"] == [0, 2] == [a.agent for a in actors]
    assert metadata["dtype"] == "float16" and metadata["source"]["seed"] == 4
    check = summary["verify"]
    assert check["seed"] == 4 and check["agents"] == [0, 2] and check["decisions"] == 10 * 20 * 2
    assert 0 < check["max_logit_diff"] <= FLOAT16_LOGIT_TOLERANCE


def test_export_command_replays_greedily_on_request(run_dir, tmp_path, capsys):
    rewards = {}
    for flag in ("--greedy", "--no-greedy"):
        assert main(["export", str(run_dir), "--out", str(tmp_path / "a.hpz"), "--verify", flag, "--json"]) == 0
        check = json.loads(capsys.readouterr().out)["verify"]
        assert check["greedy"] == (flag == "--greedy")
        assert check["reward"] == pytest.approx(check["trained_reward"], rel=1e-12)
        rewards[flag] = check["trained_reward"]
    algo = trained(run_dir)
    for flag, greedy in (("--greedy", True), ("--no-greedy", False)):
        assert rewards[flag] == algo.evaluate(20, eval_seed(SEEDS[0]), greedy=greedy)[0]


@pytest.mark.parametrize("flags, message", [
    (["--greedy"], "--greedy/--no-greedy chooses the actions of --verify's replay; give --verify too"),
    (["--agents", "0,7"], "--agents: agents must be distinct indices"),
    (["--agents", "one"], "--agents: must be all or comma-separated"),
    (["--seed", "9"], "--seed: seed must be one of"),
    (["--format", "onnx", "--dtype", "float16"], "--dtype: dtype float16 is for hpz files"),
    (["--format", "zip"], "--format: invalid choice"),
    (["--format", "onnx", "--verify"], "--verify checks .hpz files"),
])
def test_export_command_errors_name_the_flag(run_dir, tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(run_dir), "--out", str(tmp_path / "a.hpz"), *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_deploy_bench_command(run_dir, tmp_path, capsys):
    path = tmp_path / "actors.hpz"
    export_actors(run_dir, path, agents=[1, 2])
    assert main(["deploy-bench", str(path), "--agent", "2", "--steps", "20", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["file_bytes"] == path.stat().st_size and result["timed_agent"] == 2
    assert set(result["step_us"]) == {"sparse_op", "numpy", "dense_torch_lstm"}
    assert all(us > 0 for us in result["step_us"].values())
    with pytest.raises(SystemExit):
        main(["deploy-bench", str(path), "--agent", "0"])
    assert "--agent must be one of the file's agents [1, 2]" in capsys.readouterr().err


def test_actors_of_plain_actor_critic_runs_export_too(tmp_path):
    values = {k: v for k, v in tiny_config().__dict__.items() if k not in ("epochs", "minibatches", "algo")}
    train(TrainConfig.preset("paper", algo="ac", **values), tmp_path / "run", progress=False)
    export_actors(tmp_path / "run", tmp_path / "actors.hpz")
    result = replay_evaluation(tmp_path / "run", tmp_path / "actors.hpz")
    assert result["max_logit_diff"] <= 1e-5 and result["different_actions"] == 0


# ---------------------------------------------------------------------------------------------- observe_snr
@pytest.fixture(scope="module")
def snr_run_dir(tmp_path_factory):
    """A finished two-seed run whose users observe the SNR (primary users block some transmissions)."""
    out = tmp_path_factory.mktemp("run-observe-snr")
    train(tiny_config(prune_mode="masked", observe_snr=True, snr_low=1.0, snr_high=100.0, pu_prob=0.3), out,
          progress=False)
    return out


def random_features(rng, shape, snr_range=(1.0, 100.0)):
    """Features of random last actions, feedback and observed rates (0 when idle or blocked), K = 3."""
    action = rng.integers(0, 4, shape)
    feedback = np.where(action == 0, 0, rng.choice([1, -1, -2], shape))
    rate = np.where((action > 0) & (feedback != -2), np.log2(1 + rng.uniform(*snr_range, shape)), 0.0)
    return observation_features(action, feedback, 3, rate=rate, snr_range=snr_range)


@pytest.mark.parametrize("greedy", [False, True], ids=["sampled", "greedy"])
def test_actors_that_observe_the_snr_export_and_replay_the_evaluation(snr_run_dir, tmp_path, greedy):
    path = tmp_path / "actors.hpz"
    export_actors(snr_run_dir, path, seed=4)
    metadata, _ = read_hpz(path)
    assert metadata["architecture"]["input_size"] == 3 + 6 and metadata["environment"]["observe_snr"] is True
    assert "SNR" in metadata["encoding"]["features"]
    actor = load_actors(path)[0]
    assert actor.observe_snr and actor.snr_range == (1.0, 100.0) and actor.input_size == 9
    result = replay_evaluation(snr_run_dir, path, greedy=greedy)
    print(result)
    assert result["max_logit_diff"] <= 1e-5 and result["different_actions"] == 0
    assert result["reward"] == pytest.approx(result["trained_reward"], rel=1e-12)
    # the trained actors' own evaluation of the held-out episodes, which encodes the feature as training did
    assert trained(snr_run_dir).evaluate(20, eval_seed(SEEDS[0]), greedy=greedy)[1] == result["trained_reward"]


def test_actors_that_observe_the_snr_on_numpy_and_onnx(snr_run_dir, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    export_actors(snr_run_dir, tmp_path / "actors.hpz")
    export_actors(snr_run_dir, tmp_path / "actors.onnx", format="onnx")
    sparse, numpy_actors = load_actors(tmp_path / "actors.hpz"), load_numpy_actors(tmp_path / "actors.hpz")
    session = ort.InferenceSession(str(tmp_path / "actors.onnx"), providers=["CPUExecutionProvider"])
    h = np.zeros((3, 2, 4, 16), dtype=np.float32)
    c = np.zeros_like(h)
    for actor in (*sparse, *numpy_actors):
        actor.reset(4)
    rng = np.random.default_rng(3)
    for _ in range(6):
        features = random_features(rng, (3, 4))
        logits, h, c = session.run(None, {"features": features, "h": h, "c": c})
        for i, (a, b) in enumerate(zip(sparse, numpy_actors)):
            expected = a.logits(features[i]).numpy()
            np.testing.assert_allclose(b.logits(features[i]), expected, atol=1e-5, rtol=0)
            np.testing.assert_allclose(logits[i], expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"features must be \(9,\) for batch 1"):
        load_actors(tmp_path / "actors.hpz")[0].logits(observation_features(1, 1, 3))  # the feature left out


def test_deploy_bench_of_actors_that_observe_the_snr(snr_run_dir, tmp_path, capsys):
    export_actors(snr_run_dir, tmp_path / "actors.hpz", agents=[1])
    assert main(["deploy-bench", str(tmp_path / "actors.hpz"), "--steps", "20", "--json"]) == 0
    assert all(us > 0 for us in json.loads(capsys.readouterr().out)["step_us"].values())


def test_observation_features_with_the_rate():
    rate = np.log2(1 + np.array([0.0, 25.75, 100.0, 1.0]))
    rate[0] = 0.0  # idle
    actions, feedback = np.array([0, 2, 1, 3]), np.array([0, -1, 1, 1])
    features = observation_features(actions, feedback, 3, rate=rate, snr_range=(1.0, 100.0))
    assert features.shape == (4, 9) and features.dtype == np.float32
    np.testing.assert_array_equal(features[:, :8], observation_features(actions, feedback, 3))
    np.testing.assert_allclose(features[:, 8], [0, 0.25, 1, 0], atol=1e-6)
    np.testing.assert_allclose(observation_features(2, 1, 3, rate=np.log2(51.5), snr_range=(1.0, 100.0))[8], 0.5,
                               atol=1e-6)  # scalars too
    for rate, snr_range in ((1.0, None), (None, (1.0, 100.0))):
        with pytest.raises(ValueError, match="rate and snr_range go together"):
            observation_features(1, 1, 3, rate=rate, snr_range=snr_range)
