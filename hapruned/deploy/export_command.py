"""``hapruned export``: write a run's pruned actors to a compact sparse .hpz file or an ONNX graph."""

from __future__ import annotations

import argparse
import functools
import json

from hapruned.deploy import FORMATS
from hapruned.deploy.hpz import DTYPES


def parse_agents(text: str):
    """``all`` -> None (every agent); ``0,3`` -> [0, 3]."""
    if text.strip() == "all":
        return None
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be all or comma-separated agent indices such as 0,3, got {text!r}") from None


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export",
        help="export a run's pruned actors to a sparse .hpz file or an ONNX graph",
        description="Write the actors of one training seed of a run directory to one file: .hpz (each "
        "weight matrix in CSR form, indices as narrow as they fit, with the architecture, environment and "
        "observation encoding, a format version and a checksum; run it with hapruned.deploy) or ONNX "
        "(dense weights, opset 17, for ONNX Runtime).",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by hapruned train")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="the file to write, outside the run directory (replaced atomically if it exists)")
    parser.add_argument("--format", choices=FORMATS, default="hpz", help="hpz (sparse) or onnx (dense) (default: hpz)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32",
                        help="stored weights of an hpz file; float16 is computed in float32 (default: float32)")
    parser.add_argument("--agents", type=parse_agents, default=None, metavar="all|0,3,...",
                        help="the agents to export, by index in the run (default: all)")
    parser.add_argument("--seed", type=int, default=None, metavar="S",
                        help="the training seed whose actors to export, for runs of several seeds "
                        "(default: the run's first)")
    parser.add_argument("--verify", action="store_true",
                        help="then replay the run's held-out evaluation episodes with the written .hpz actors beside "
                        "the trained ones and report the largest logit difference, the differing actions and "
                        "both rewards (hpz only)")
    parser.add_argument("--greedy", action=argparse.BooleanOptionalAction, default=None,
                        help="with --verify: replay with the most likely actions (as an actor deployed without a random "
                        "source acts) or with sampled ones (default: as the run evaluated, its eval_greedy)")
    parser.add_argument("--json", action="store_true", help="print what was written (and the check) as JSON")
    parser.set_defaults(func=functools.partial(run_export, parser=parser))
    return parser


def run_export(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from hapruned.deploy.export import ExportError, run_actors, write_actors

    flags = {"run_dir": "RUN_DIR", "out": "--out", "seed": "--seed", "agents": "--agents", "dtype": "--dtype",
             "format": "--format"}
    if args.verify and args.format != "hpz":
        parser.error("--verify checks .hpz files; it does not go with --format onnx")
    if args.greedy is not None and not args.verify:
        parser.error("--greedy/--no-greedy chooses the actions of --verify's replay; give --verify too")
    try:
        metadata, actors = run_actors(args.run_dir, args.seed, args.agents)
        size = write_actors(args.out, metadata, actors, dtype=args.dtype, format=args.format, run_dir=args.run_dir)
    except ExportError as error:
        parser.error(f"{flags[error.argument]}: {error}" if error.argument else str(error))
    except ImportError as error:
        parser.error(f"--format onnx: {error}")
    nonzeros = sum(int(m.values.size) for a in actors for m in (*a.layers, a.head))
    weights = sum(m.shape[0] * m.shape[1] for a in actors for m in (*a.layers, a.head))
    summary = {"out": args.out, "format": args.format, "dtype": args.dtype, "bytes": size,
               "seed": metadata["source"]["seed"], "agents": [a.agent for a in actors],
               "nonzero_weights": nonzeros, "sparsity": 1 - nonzeros / weights}
    if not args.json:
        print(f"wrote {args.out}: {len(actors)} actor(s) of seed {summary['seed']} (agents "
              f"{','.join(map(str, summary['agents']))}), {args.format} {args.dtype}, {size:,} bytes; "
              f"{nonzeros:,} nonzero weights, sparsity {summary['sparsity']:.4f}", flush=True)
    if args.verify:
        from hapruned.deploy.verify import replay_evaluation

        check = summary["verify"] = replay_evaluation(args.run_dir, args.out, greedy=args.greedy, progress=not args.json)
        if not args.json:
            mode = "greedy" if check["greedy"] else "sampled"
            change = (check["reward"] - check["trained_reward"]) / abs(check["trained_reward"] or 1.0)
            print(f"replayed the run's {check['episodes']} held-out episodes ({mode} actions): max |logit "
                  f"difference| {check['max_logit_diff']:.3g}, {check['different_actions']} of {check['decisions']} "
                  f"actions differ, episode reward {check['reward']:.2f} against the trained actors' "
                  f"{check['trained_reward']:.2f} ({change:+.3%})")
    if args.json:
        print(json.dumps(summary, indent=2))
    return 0
