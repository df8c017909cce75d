"""``hapruned deploy-bench``: size and B = 1 step latency of an exported .hpz file on this machine."""

from __future__ import annotations

import argparse
import functools
import io
import json
import time
from pathlib import Path

from hapruned import check_threads
from hapruned.validation import check_integer


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "deploy-bench",
        help="size and step latency of an exported .hpz file against the dense actor",
        description="Print the file's size against torch.save of the same dense actors' state_dict, and the "
        "latency of one step at batch 1 (both LSTM layers and the head) of one actor on the sparse op, on "
        "the NumPy path and as a dense torch nn.LSTM + nn.Linear.",
    )
    parser.add_argument("file", metavar="FILE", help="an .hpz file written by hapruned export")
    parser.add_argument("--agent", type=int, default=None, metavar="A",
                        help="the agent to time, by index in the run (default: the file's first)")
    parser.add_argument("--steps", type=int, default=2000, metavar="N",
                        help="timed steps per path, >= 5 (default: 2000)")
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="torch threads, from 1 to the cores this process may use (default: 1, as on a small device)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(func=functools.partial(run_bench, parser=parser))
    return parser


def step_latency(step, steps: int, blocks: int = 5) -> float:
    """Seconds per call of ``step()``: the fastest of ``blocks`` blocks of ``steps / blocks`` calls, after a
    warm-up block (the fastest block is the one least disturbed by other work on the machine)."""
    per_block = max(1, steps // blocks)
    for _ in range(per_block):
        step()
    best = float("inf")
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(per_block):
            step()
        best = min(best, (time.perf_counter() - start) / per_block)
    return best


def bench_memory(architecture: dict, n_actors: int) -> dict[str, tuple[float, str]]:
    """Rough bytes of the dense float32 copies the benchmark builds (see ``hapruned.resources.check_memory``):
    every actor of the file and its ``torch.save`` for the size comparison, and the timed actor."""
    F, H, L, A = (architecture[key] for key in ("input_size", "hidden_size", "num_layers", "n_actions"))
    weights = 4 * H * (F + H + 2) + (L - 1) * 4 * H * (2 * H + 2) + A * (H + 1)  # nn.LSTM (two biases) + head
    grows = "the file's number of actors and their hidden_size (export fewer with hapruned export --agents)"
    return {"the dense copies of the file's actors and their torch.save": (2 * 4 * weights * n_actors, grows),
            "the timed actor, dense": (2 * 4 * weights, "the file's hidden_size and num_layers")}


def run_bench(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import numpy as np
    import torch

    from hapruned.deploy import observation_features
    from hapruned.deploy.actor import SparseActor, dense_torch_actor
    from hapruned.deploy.hpz import HpzError, read_hpz
    from hapruned.deploy.numpy_actor import NumpyActor
    from hapruned.resources import MemoryEstimateError, check_memory

    try:
        check_integer(args.steps, "--steps", 5)
        check_threads(args.threads, "--threads")
    except ValueError as err:
        parser.error(str(err))
    try:
        metadata, actors = read_hpz(args.file)
        check_memory(bench_memory(metadata["architecture"], len(actors)))
    except (HpzError, MemoryEstimateError) as error:
        parser.error(f"FILE: {error}")
    except OSError as error:
        parser.error(f"FILE: {error.strerror or error}: {args.file}")
    agents = [a.agent for a in actors]
    if args.agent is not None and args.agent not in agents:
        parser.error(f"--agent must be one of the file's agents {agents}, got {args.agent}")
    weights = actors[agents.index(args.agent)] if args.agent is not None else actors[0]
    torch.set_num_threads(args.threads)

    dense = {f"agent{a.agent}": dict(zip(("lstm", "head"), (m.state_dict() for m in dense_torch_actor(a, metadata))))
             for a in actors}
    buffer = io.BytesIO()
    torch.save(dense, buffer)
    file_bytes, dense_bytes = Path(args.file).stat().st_size, buffer.getbuffer().nbytes

    sparse, numpy_actor = SparseActor(weights, metadata), NumpyActor(weights, metadata)
    # a transmission on channel 1 that got an ACK (at the top of the SNR range, if the actor observes it)
    rate = {"rate": np.log2(1 + sparse.snr_range[1]), "snr_range": sparse.snr_range} if sparse.observe_snr else {}
    features = observation_features(1, 1, sparse.n_channels, **rate)
    lstm, head = dense_torch_actor(weights, metadata)
    x = torch.from_numpy(features).view(1, 1, -1)
    state = [None]

    def dense_step():
        y, state[0] = lstm(x, state[0])
        return head(y)

    with torch.inference_mode():
        latency = {
            "sparse_op": step_latency(lambda: sparse.logits(features), args.steps),
            "numpy": step_latency(lambda: numpy_actor.logits(features), args.steps),
            "dense_torch_lstm": step_latency(dense_step, args.steps),
        }
    nonzeros = sum(int(m.values.size) for m in (*weights.layers, weights.head))
    total = sum(m.shape[0] * m.shape[1] for m in (*weights.layers, weights.head))
    result = {
        "file": args.file, "dtype": metadata.get("dtype"), "agents": agents, "file_bytes": file_bytes,
        "dense_torch_save_bytes": dense_bytes, "size_ratio": file_bytes / dense_bytes,
        "timed_agent": weights.agent, "sparsity": 1 - nonzeros / total, "threads": args.threads,
        "step_us": {name: seconds * 1e6 for name, seconds in latency.items()},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    dense_us = result["step_us"]["dense_torch_lstm"]
    print(f"{args.file}: {len(agents)} actor(s), {result['dtype']}; {file_bytes:,} bytes against "
          f"{dense_bytes:,} for torch.save of the dense actors ({dense_bytes / file_bytes:.1f}x smaller)")
    print(f"one step at batch 1 of agent {weights.agent} (sparsity {result['sparsity']:.4f}), "
          f"{args.threads} thread(s):")
    names = {"sparse_op": "sparse op (SparseActor)", "numpy": "NumPy path (NumpyActor)",
             "dense_torch_lstm": "dense torch nn.LSTM + nn.Linear"}
    for key, name in names.items():
        us = result["step_us"][key]
        print(f"  {name:<34} {us:9.1f} us   {dense_us / us:5.1f}x the dense torch step")
    return 0
