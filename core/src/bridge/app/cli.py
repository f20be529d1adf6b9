"""The ``bridge`` command line: ``bridge plugins``, ``bridge inspect MODEL``, ``bridge demo``, ``bridge harvest``,
``bridge new-plugin NAME``."""

from __future__ import annotations

import argparse
import collections
import json
import sys
import warnings

EPILOG = """examples:
  bridge plugins                 which families are installed, and which are broken
  bridge inspect path/to/model   the model's hook points with their shapes
  bridge inspect MODEL --map     the components its adapter built: kind, HF module, options
  bridge demo                    find induction heads in the shipped model
  bridge demo --all              one circuit study on the shipped model of every family: a table and a figure
  bridge harvest MODEL --data corpus.jsonl --hooks 'blocks.*.hook_resid_post' --out acts/
                                 write activations to safetensors shards (resumable)
  bridge demo --model examples/models/shapes-vit
                                 where the shipped shape classifier looks, and what it uses
  bridge new-plugin my-family    write a plugin distribution to start a family from

environment:
  BRIDGE_LOAD_PLUGINS=a,b        load only these plugin distributions (empty: none)
  BRIDGE_TRACE_PLUGINS=1         print every plugin hook call
  HF_HUB_OFFLINE=1               load hub names from the local HF cache only
"""


def _plugins(args: argparse.Namespace) -> int:
    from bridge.kernel.plugins import get_registry

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # broken plugins are shown in the listing instead
        registry = get_registry()
    infos = [p for p in registry.plugins if args.all or p.status != "disabled"]
    if args.json:
        print(json.dumps([info.to_dict() for info in infos], indent=2))
        return 0
    if not infos:
        hidden = len(registry.plugins) - len(infos)
        print(
            "No bridge plugins loaded."
            + (
                f" {hidden} disabled by BRIDGE_LOAD_PLUGINS (see --all)."
                if hidden
                else " Install a family, e.g.: pip install bridge-gpt2"
            )
        )
        return 0
    entry_points_of = collections.Counter(info.distribution for info in infos)
    for info in infos:
        print(f"{info.distribution} {info.version}  [{info.status}]")
        if entry_points_of[info.distribution] > 1:
            print(f"  entry point: {info.entry_point}")
        if info.architectures:
            print(f"  architectures: {', '.join(info.architectures)}")
        if info.hooks:
            print(f"  hooks: {', '.join(info.hooks)}")
        if info.error:
            print(f"  error: {info.error}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from bridge.app.component_map import component_nodes, folded, format_map
    from bridge.app.demo import hook_tree
    from bridge.kernel import resolution
    from bridge.kernel.hooked_model import HookedModel

    model: HookedModel = resolution.load(args.model, trust_remote_code=args.trust_remote_code)
    cfg = model.cfg
    config = {k: v for k, v in cfg.to_dict().items() if k != "extra"}
    if args.map:
        nodes = component_nodes(model)
        if args.json:
            print(json.dumps({"config": config, "map": [node.to_dict() for node in nodes]}, indent=2))
            return 0
        print(f"{cfg.architecture} ({type(model.adapter).__name__}): {len(nodes)} components")
        print("  name, component kind, HF module it wraps (layer index as {i}), options of its spec")
        for line in format_map(folded(nodes)):
            print(line)
        return 0
    rows = [
        {"name": name, "shape": list(shape) if shape else None, "opt_in": opt_in}
        for name, shape, opt_in in hook_tree(model, layers=None)
    ]
    if args.json:
        print(json.dumps({"config": config, "hooks": rows}, indent=2))
        return 0
    print(
        f"{cfg.architecture} ({type(model.adapter).__name__}): {cfg.n_layers} layers, {cfg.n_heads} heads "
        f"({cfg.n_key_value_heads} kv), d_model {cfg.d_model}, d_head {cfg.d_head}, d_mlp {cfg.d_mlp}, "
        f"vocab {cfg.d_vocab}"
    )
    dry_run = "1 × 4 tokens" if model.adapter.output_fields is None else "one example input"
    print(f"{len(model.hook_dict)} hook points; shapes from a dry run on {dry_run}; * = opt-in (off until enabled)")
    for row in rows:
        shape = "x".join(map(str, row["shape"])) if row["shape"] else "-"
        print(f"  {'*' if row['opt_in'] else ' '} {row['name']:<40} {shape}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    if args.all:
        from bridge.app.study import DEFAULT_FIGURE, run_all

        run_all(args.models, args.png or DEFAULT_FIGURE, batch=args.batch, length=args.length)
        return 0
    from bridge.app.demo import run_demo

    run_demo(args.model, args.png, default_png=True, html=args.html)
    return 0


def _new_plugin(args: argparse.Namespace) -> int:
    from bridge.app.new_plugin import write_plugin

    target = write_plugin(args.name, args.into)
    print(f"wrote {target}; next: pip install -e {target} && python -m pytest {target / 'tests'}")
    return 0


def _harvest(args: argparse.Namespace) -> int:
    from bridge.harvest.writer import harvest

    acts = harvest(
        args.model,
        data=args.data,
        hooks=args.hooks,
        out=args.out,
        batch_size=args.batch_size,
        context_length=args.context_length,
        max_tokens=args.max_tokens,
        dtype=args.dtype,
        rows_per_shard=args.rows_per_shard,
        progress=not args.quiet,
    )
    print(f"{len(acts)} rows of {acts.index['context_length']} tokens, hooks {', '.join(acts.hooks)} in {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bridge",
        description="TransformerLens-style hook points on any HuggingFace model.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    plugins = commands.add_parser("plugins", help="list plugins: distribution, version, architectures, status")
    plugins.add_argument("--json", action="store_true", help="print machine-readable JSON")
    plugins.add_argument("--all", action="store_true", help="also list plugins disabled by BRIDGE_LOAD_PLUGINS")
    plugins.set_defaults(run=_plugins)
    inspect = commands.add_parser("inspect", help="load a model and print its hook points with shapes")
    inspect.add_argument("model", metavar="MODEL", help="a model directory, or a hub name in the local HF cache")
    inspect.add_argument("--json", action="store_true", help="print machine-readable JSON")
    inspect.add_argument(
        "--map", action="store_true", help="print the component tree instead: kind, HF module path, options per node"
    )
    inspect.add_argument("--trust-remote-code", action="store_true", help="allow the repository's own code to run")
    inspect.set_defaults(run=_inspect)
    demo = commands.add_parser(
        "demo",
        help="find induction heads in a model and ablate them (what `make demo` runs); "
        "for an image classifier, where it looks",
    )
    demo.add_argument("--model", default="examples/models/induction-2l", help="model directory or hub name")
    demo.add_argument(
        "--png",
        default=None,
        help="where to draw the pattern (default: examples/output/induction_head.png; "
        "examples/output/vision_attention.png for an image classifier; "
        "examples/output/one_study_every_family.png with --all)",
    )
    demo.add_argument(
        "--html", default=None, help="also write the induction layer's attention patterns as a circuitsvis page"
    )
    demo.add_argument(
        "--all",
        action="store_true",
        help="run one induction study (patching, attribution patching, EAP-IG circuit) on every trained model "
        "under --models, printing one table and drawing one figure",
    )
    demo.add_argument("--models", default="examples/models", help="where --all finds the induction-* models")
    demo.add_argument("--batch", type=int, default=8, help="with --all: sequences per study")
    demo.add_argument("--length", type=int, default=20, help="with --all: tokens per copy of the repeated sequence")
    demo.set_defaults(run=_demo)
    new_plugin = commands.add_parser("new-plugin", help="write a plugin distribution (adapter, kit tests, README)")
    new_plugin.add_argument("name", metavar="NAME", help="the family's name: distribution bridge-NAME")
    new_plugin.add_argument("--into", default=".", help="the directory to write bridge-NAME in (default: here)")
    new_plugin.set_defaults(run=_new_plugin)
    harvest = commands.add_parser(
        "harvest", help="run a model over a corpus and write activations to safetensors shards (resumable)"
    )
    harvest.add_argument("model", metavar="MODEL", help="a model directory, or a hub name in the local HF cache")
    harvest.add_argument("--data", required=True, help="text file, .jsonl (text/tokens), or a directory")
    harvest.add_argument("--hooks", required=True, help="hook names or globs, comma-separated")
    harvest.add_argument("--out", required=True, help="output directory (an interrupted harvest there resumes)")
    harvest.add_argument("--batch-size", type=int, default=8)
    harvest.add_argument("--context-length", type=int, default=128, help="tokens per row")
    harvest.add_argument("--max-tokens", type=int, default=None, help="stop after this many tokens (default: all)")
    harvest.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default="float32")
    harvest.add_argument("--rows-per-shard", type=int, default=None, help="default: ~256 MB shards")
    harvest.add_argument("--quiet", action="store_true", help="no progress bar")
    harvest.set_defaults(run=_harvest)
    return parser


def main(argv: list[str] | None = None) -> int:
    from transformers.utils import logging as hf_logging

    from bridge.kernel.errors import BridgeError

    hf_logging.disable_progress_bar()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 1
    try:
        return args.run(args)
    except BridgeError as err:
        print(f"bridge {args.command}: error: {err}", file=sys.stderr)
        print("hint: `bridge plugins` shows what is installed; `bridge --help` lists the commands.", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
