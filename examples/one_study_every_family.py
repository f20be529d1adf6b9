"""One circuit study, run unchanged on a trained model of every family (what `bridge demo --all` runs).

For every `examples/models/induction-*` model (GPT-2, Llama, BLOOM, DeepSeek-V2, Mamba, ...) and the hybrid
`examples/models/hybrid-induction`, the same code:
the loss on a repeated random sequence; what carries induction, from hooks alone (induction and previous-token
heads from `hook_pattern`; for Mamba, which has no heads, the mixer and the SSM channels that matter, with the
induction score of their effective attention); exact activation patching (`bridge.patching`) against attribution
patching (`bridge.attribution`: AtP, AtP*, integrated gradients); and the EAP-IG circuit with its faithfulness,
measured by running the model with every other edge ablated. Prints one table and draws one figure.

Run from the repository root::

    python examples/one_study_every_family.py            # or: make demo-all
    python examples/one_study_every_family.py --models examples/models --png examples/output/study.png

The code is `bridge/app/study.py`; read it for how each number is computed.
"""

from __future__ import annotations

import argparse

import torch

from bridge.app.study import DEFAULT_FIGURE, DEFAULT_MODELS, run_all


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS, help="directory holding the induction-* models")
    parser.add_argument("--png", default=DEFAULT_FIGURE, help="where to draw the figure")
    parser.add_argument("--batch", type=int, default=8, help="sequences per study")
    parser.add_argument("--length", type=int, default=20, help="tokens per copy of the repeated sequence")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run_all(args.models, args.png, batch=args.batch, length=args.length)


if __name__ == "__main__":
    main()
