"""Edge attribution patching (EAP, EAP-IG) and edge-ablated runs: circuits as graphs of edges.

Nodes are the residual stream's input (the embeddings), each attention head, each MLP (dense or a mixture of
experts), each SSM mixer, and the logits. A node *writes* to the residual stream (a head's per-head output
``attn.hook_result``, ``hook_mlp_out``, ``mixer.hook_ssm_out``, the embeddings) and *reads* it through its
receivers: a head through its query, key and value (key and value per key/value head), an MLP or mixer through
its input, the logits through the final residual stream. An edge ``u → r`` is the part of receiver ``r``'s input
that node ``u`` wrote; every write of an earlier node reaches every later receiver through the residual stream.

Both the gradients and the ablations need each receiver to read its own copy of the residual stream. One
batched pass gives it: row block 0 is the model's run, and for each receiver of the current layer another row
block carries that receiver's input, ``resid - Σ_{u ablated} (write_u - ref_u)``; at ``hook_q``/``hook_k``/
``hook_v`` (``hook_mlp_out``, ``mixer.hook_ssm_out``) the row block of the receiver hands its head (output) to
block 0. With nothing ablated block 0 is the model's own forward pass, and the gradient with respect to a
receiver's copy is the gradient EAP multiplies with each upstream write's clean-minus-corrupted change. With the
edges outside a circuit ablated, block 0 is the circuit run (``faithfulness``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from bridge.analysis.patch_runs import parse_memory_budget
from bridge.analysis.protocol import HookedModelLike
from bridge.kernel.errors import BadInputError, BridgeError

MetricFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Node:
    """A node of the graph: ``input``, ``a{layer}.h{head}``, ``m{layer}`` (MLP), ``s{layer}`` (SSM mixer),
    ``logits``. ``hook`` holds its write (``[b, p, d_model]``, or per head ``[b, p, h, d_model]``)."""

    name: str
    kind: str
    layer: int
    head: int | None = None
    hook: str | None = None


@dataclass(frozen=True)
class Receiver:
    """Where a node reads the residual stream: ``port`` is ``q``/``k``/``v`` (``head`` a query head for ``q``, a
    key/value head for ``k``/``v``), ``in`` (MLP, mixer) or ``out`` (logits); ``point`` is the residual hook it
    reads (``hook_resid_pre``, ``hook_resid_mid`` or the last ``hook_resid_post``)."""

    node: str
    port: str
    layer: int
    head: int | None
    point: str

    @property
    def name(self) -> str:
        return f"{self.node}<{self.port}>" if self.port in ("q", "k", "v") else self.node


@dataclass
class Graph:
    """The nodes (writers), receivers, and which writer reaches which receiver (``allowed`` ``[U, R]``)."""

    writers: list[Node]
    receivers: list[Receiver]
    allowed: torch.Tensor
    n_layers: int
    kv_names: bool = False

    def edge_names(self) -> Iterator[tuple[int, int, str, str]]:
        for u, r in self.allowed.nonzero().tolist():
            yield u, r, self.writers[u].name, self.receivers[r].name


def _block_parts(model: HookedModelLike, layer: int) -> dict[str, Any]:
    """What block ``layer`` has: attention (heads, kv heads), an MLP (and whether it reads ``resid_mid``), a mixer."""
    names = model.hook_dict
    prefix = f"blocks.{layer}."
    parts: dict[str, Any] = {}
    if prefix + "attn.hook_q" in names and prefix + "attn.hook_result" in names:
        parts["attn"] = True
    if prefix + "hook_mlp_out" in names:
        parts["mlp"] = "hook_resid_mid" if prefix + "hook_resid_mid" in names else "hook_resid_pre"
    if prefix + "mixer.hook_ssm_out" in names:
        parts["mixer"] = "mixer.hook_ssm_out"
    elif prefix + "hook_mixer_out" in names and prefix + "mixer.hook_y" in names:  # a hybrid's SSM block
        parts["mixer"] = "hook_mixer_out"
    if not parts:
        raise BridgeError(
            f"block {layer} has no attention with per-head results, MLP or SSM mixer that edge attribution knows"
        )
    if getattr(model.blocks[layer], "output_hook", "hook_resid_post") != "hook_resid_post":
        raise BridgeError(f"block {layer} normalizes its output (post-norm): its writes do not add up; no edges here")
    return parts


def build_graph(model: HookedModelLike) -> Graph:
    """The computational graph of ``model``'s blocks, as edge attribution sees it."""
    cfg = model.cfg
    writers = [Node("input", "input", -1, hook="blocks.0.hook_resid_pre")]
    receivers: list[Receiver] = []
    order: list[tuple[int, int]] = [(-1, 0)]  # (layer, stage) of each writer: stage 0 attention/mixer, 1 MLP
    reads: list[tuple[int, int]] = []
    kv_names = False
    for layer in range(cfg.n_layers):
        parts = _block_parts(model, layer)
        if parts.get("attn"):
            n_heads = cfg.n_heads
            n_kv = getattr(cfg, "n_key_value_heads", None) or n_heads
            kv_names = kv_names or n_kv != n_heads
            for head in range(n_heads):
                writers.append(Node(f"a{layer}.h{head}", "head", layer, head, f"blocks.{layer}.attn.hook_result"))
                order.append((layer, 0))
                receivers.append(Receiver(f"a{layer}.h{head}", "q", layer, head, "hook_resid_pre"))
                reads.append((layer, 0))
            for head in range(n_kv):
                kv = f"a{layer}.kv{head}" if n_kv != n_heads else f"a{layer}.h{head}"
                for port in ("k", "v"):
                    receivers.append(Receiver(kv, port, layer, head, "hook_resid_pre"))
                    reads.append((layer, 0))
        if parts.get("mixer"):
            writers.append(Node(f"s{layer}", "mixer", layer, hook=f"blocks.{layer}.{parts['mixer']}"))
            order.append((layer, 0))
            receivers.append(Receiver(f"s{layer}", "in", layer, None, "hook_resid_pre"))
            reads.append((layer, 0))
        if "mlp" in parts:
            stage = 1 if parts["mlp"] == "hook_resid_mid" else 0
            writers.append(Node(f"m{layer}", "mlp", layer, hook=f"blocks.{layer}.hook_mlp_out"))
            order.append((layer, stage))
            receivers.append(Receiver(f"m{layer}", "in", layer, None, parts["mlp"]))
            reads.append((layer, stage))
    receivers.append(Receiver("logits", "out", cfg.n_layers - 1, None, "hook_resid_post"))
    reads.append((cfg.n_layers, 0))
    allowed = torch.tensor([[w < r for r in reads] for w in order], dtype=torch.bool)  # [U, R]
    return Graph(writers, receivers, allowed, cfg.n_layers, kv_names)


# ----------------------------------------------------------------------------- the batched edge run


@dataclass
class _RunState:
    """What one edge run needs and collects: slot of each receiver, current writes, the receivers' copies."""

    batch: int
    n_slots: int
    slots: dict[int, int]  # receiver index -> row block
    ablate: torch.Tensor | None  # [U, R] bool: edge replaced by its reference
    refs: torch.Tensor | None  # [U, b, p, d]: the writes ablated edges carry instead
    entry: torch.Tensor | None = None  # what block 0's input becomes (interpolated embeddings)
    writes: dict[int, torch.Tensor] = field(default_factory=dict)
    copies: dict[int, torch.Tensor] = field(default_factory=dict)


def _slot_plan(graph: Graph, receivers: Sequence[int] | None = None) -> tuple[dict[int, int], int]:
    """Row blocks for ``receivers`` (default: all but the logits): those of one layer get blocks 1..n; layers reuse
    them. A receiver without a block reads block 0's stream, as the model does (it cannot have ablated edges)."""
    chosen = range(len(graph.receivers)) if receivers is None else receivers
    slots: dict[int, int] = {}
    per_layer: dict[int, int] = {}
    for r in chosen:
        receiver = graph.receivers[r]
        if receiver.port == "out":
            continue
        per_layer[receiver.layer] = per_layer.get(receiver.layer, 0) + 1
        slots[r] = per_layer[receiver.layer]
    return slots, 1 + max(per_layer.values(), default=0)


def _hooks(model: HookedModelLike, graph: Graph, state: _RunState) -> list[tuple[str, Callable]]:
    """The forward hooks of an edge run (see the module docstring)."""
    b = state.batch
    writer_index = {w.name: u for u, w in enumerate(graph.writers)}
    hooks: list[tuple[str, Callable]] = []

    def rows(x: torch.Tensor, slot: int) -> torch.Tensor:
        return x[slot * b : (slot + 1) * b]

    def copy_for(r: int, resid: torch.Tensor) -> torch.Tensor:
        """Receiver ``r``'s input ``[b, p, d]``: the stream minus, for each ablated edge, the write's change."""
        out = resid.clone()
        if state.ablate is not None and state.refs is not None:
            for u in state.ablate[:, r].nonzero().flatten().tolist():
                out = out - (state.writes[u] - state.refs[u])
        state.copies[r] = out
        return out

    def set_copies(point: str, layer: int) -> Callable:
        wanted = [r for r, rec in enumerate(graph.receivers) if rec.layer == layer and rec.point == point]
        wanted = [r for r in wanted if r in state.slots]

        def hook(x: torch.Tensor, hook: Any) -> torch.Tensor:
            main = rows(x, 0)
            if layer == 0 and point == "hook_resid_pre":
                if state.entry is not None:
                    main = state.entry
                if torch.is_grad_enabled() and not main.requires_grad:  # frozen embeddings: start the graph here
                    main = main.detach().requires_grad_(True)
                state.writes[0] = main
            pieces = [main] + [rows(x, s) for s in range(1, state.n_slots)]
            for r in wanted:
                pieces[state.slots[r]] = copy_for(r, main)
            return torch.cat(pieces)

        return hook

    def take_heads(layer: int, port: str) -> Callable:
        wanted = [
            (r, rec.head)
            for r, rec in enumerate(graph.receivers)
            if rec.layer == layer and rec.port == port and r in state.slots
        ]

        def hook(x: torch.Tensor, hook: Any) -> torch.Tensor:
            out = x.clone()
            for r, head in wanted:
                out[:b, :, head] = rows(x, state.slots[r])[:, :, head]
            return out

        return hook

    def take_output(layer: int, node: str) -> Callable:
        r = next(r for r, rec in enumerate(graph.receivers) if rec.node == node)
        u = writer_index[node]

        def hook(x: torch.Tensor, hook: Any) -> torch.Tensor | None:
            if r not in state.slots:
                state.writes[u] = rows(x, 0)
                return None
            main = rows(x, state.slots[r])
            state.writes[u] = main
            return torch.cat([main, x[b:]])

        return hook

    def keep_heads(layer: int) -> Callable:
        heads = [(u, w.head) for u, w in enumerate(graph.writers) if w.kind == "head" and w.layer == layer]

        def hook(x: torch.Tensor, hook: Any) -> None:
            for u, head in heads:
                state.writes[u] = x[:b, :, head]

        return hook

    def final(x: torch.Tensor, hook: Any) -> torch.Tensor:
        r = len(graph.receivers) - 1
        return torch.cat([copy_for(r, rows(x, 0)), x[b:]])

    for layer in range(graph.n_layers):
        prefix = f"blocks.{layer}."
        kinds = {w.kind for w in graph.writers if w.layer == layer}
        hooks.append((prefix + "hook_resid_pre", set_copies("hook_resid_pre", layer)))
        if "head" in kinds:
            for port in ("q", "k", "v"):
                hooks.append((f"{prefix}attn.hook_{port}", take_heads(layer, port)))
            hooks.append((prefix + "attn.hook_result", keep_heads(layer)))
        if "mixer" in kinds:
            mixer = next(w for w in graph.writers if w.kind == "mixer" and w.layer == layer)
            hooks.append((str(mixer.hook), take_output(layer, mixer.name)))
        if "mlp" in kinds:
            if any(rec.point == "hook_resid_mid" and rec.layer == layer for rec in graph.receivers):
                hooks.append((prefix + "hook_resid_mid", set_copies("hook_resid_mid", layer)))
            hooks.append((prefix + "hook_mlp_out", take_output(layer, f"m{layer}")))
    hooks.append((f"blocks.{graph.n_layers - 1}.hook_resid_post", final))
    return hooks


class _ResultHooks:
    """Turn on the opt-in per-head results for the duration (the heads' writes)."""

    def __init__(self, model: HookedModelLike, graph: Graph) -> None:
        self.model = model
        self.names = sorted({w.hook for w in graph.writers if w.kind == "head" and w.hook is not None})
        self.was: list[bool] = []

    def __enter__(self) -> None:
        self.was = [self.model.hook_dict[n].enabled for n in self.names]
        if self.names and not all(self.was):
            self.model.set_opt_in("attn.hook_result", True)

    def __exit__(self, *_exc: object) -> None:
        if self.names and not all(self.was):
            self.model.set_opt_in("attn.hook_result", False)


def _run(
    model: HookedModelLike,
    graph: Graph,
    tokens: torch.Tensor,
    metric: MetricFn | None,
    ablate: torch.Tensor | None = None,
    refs: torch.Tensor | None = None,
    entry: torch.Tensor | None = None,
    grad: bool = False,
    receivers: Sequence[int] | None = None,
) -> tuple[torch.Tensor, _RunState, torch.Tensor | None]:
    """One edge run on ``tokens``: the logits of row block 0, the state, and the metric (if given). ``receivers``:
    those that get a copy of the stream (default all; every receiver with an ablated edge needs one)."""
    slots, n_slots = _slot_plan(graph, receivers)
    state = _RunState(tokens.shape[0], n_slots, slots, ablate, refs, entry)
    context = torch.enable_grad() if grad else torch.no_grad()
    with context, _ResultHooks(model, graph), model.hooks(_hooks(model, graph, state)):
        logits = model(tokens.repeat(n_slots, 1))[: tokens.shape[0]]
        value = metric(logits) if metric is not None else None
    return logits, state, value


def node_writes(model: HookedModelLike, graph: Graph, tokens: torch.Tensor) -> torch.Tensor:
    """Every writer's write ``[U, b, p, d_model]`` on a plain run of ``tokens``."""
    _, state, _ = _run(model, graph, tokens, None)
    return torch.stack([state.writes[u].detach() for u in range(len(graph.writers))])


# ----------------------------------------------------------------------------- scores


@dataclass
class EdgeScores:
    """EAP scores ``[U, R]`` (NaN where no edge exists), the graph, and the metric on both runs."""

    graph: Graph
    scores: torch.Tensor
    method: str
    clean_metric: float
    corrupt_metric: float

    def edges(self) -> list[tuple[str, str, float]]:
        """``(writer, receiver, score)`` of every edge, largest ``|score|`` first."""
        out = [(w, r, float(self.scores[u, i])) for u, i, w, r in self.graph.edge_names()]
        return sorted(out, key=lambda e: -abs(e[2]))

    def node_scores(self) -> dict[str, float]:
        """Each writer's total outgoing score (the sum of its edges)."""
        totals = self.scores.nan_to_num(0.0).sum(dim=1)
        return {w.name: float(totals[u]) for u, w in enumerate(self.graph.writers)}


def _receiver_groups(model: HookedModelLike, graph: Graph, tokens: torch.Tensor, budget: int) -> list[list[int]]:
    """Receivers in groups whose copies of the stream (each a forward pass with gradients through every block)
    fit the memory budget together; the logits need no copy."""
    cfg = model.cfg
    batch, positions = tokens.shape
    d_mlp = cfg.d_mlp or 4 * cfg.d_model
    per_copy = 4 * 3 * cfg.n_layers * batch * positions * (16 * cfg.d_model + 3 * d_mlp + 3 * cfg.n_heads * positions)
    per_layer: dict[int, list[int]] = {}
    for r, receiver in enumerate(graph.receivers):
        if receiver.port != "out":
            per_layer.setdefault(receiver.layer, []).append(r)
    size = max(1, budget // max(per_copy, 1) - 1)
    widest = max((len(rs) for rs in per_layer.values()), default=0)
    if size >= widest:
        return [[r for rs in per_layer.values() for r in rs]]
    groups: list[list[int]] = []
    for start in range(0, widest, size):  # the i-th group takes receivers i·size.. of every layer
        groups.append([r for rs in per_layer.values() for r in rs[start : start + size]])
    return groups


def attribute_edges(
    model: HookedModelLike,
    clean: torch.Tensor,
    corrupt: torch.Tensor,
    metric: MetricFn,
    method: str = "eap-ig",
    steps: int = 5,
    verbose: bool = True,
    memory_budget: int | float | str | None = None,
) -> EdgeScores:
    """EAP (``method="eap"``) or EAP-IG (``"eap-ig"``, ``steps`` midpoints from the corrupted to the clean
    embeddings) scores of every edge: ``Σ_{b,p} (write_u(clean) - write_u(corrupt)) · ∂metric/∂input_r``.
    A pass carries one copy of the stream per receiver of a layer; when they do not fit ``memory_budget``
    (bytes or ``"512MiB"``) the receivers are split over several passes."""
    if method not in ("eap", "eap-ig"):
        raise BadInputError(f"method must be 'eap' or 'eap-ig', got {method!r}")
    if clean.ndim != 2 or clean.shape != corrupt.shape:
        raise BadInputError(f"clean and corrupt must be tokens of one shape [batch, pos], got {tuple(clean.shape)}")
    if getattr(model, "training", False):
        raise BridgeError("edge attribution needs the model in eval mode: call model.eval() first")
    graph = build_graph(model)
    device = next(model.hf_model.parameters()).device
    clean, corrupt = clean.to(device), corrupt.to(device)
    clean_writes, corrupt_writes = node_writes(model, graph, clean), node_writes(model, graph, corrupt)
    delta = clean_writes - corrupt_writes  # [U, b, p, d]
    alphas = [0.0] if method == "eap" else [(j + 0.5) / steps for j in range(steps)]
    groups = _receiver_groups(model, graph, corrupt, parse_memory_budget(memory_budget))
    grads = torch.zeros((len(graph.receivers), *delta.shape[1:]))
    passes = [(alpha, group) for alpha in alphas for group in groups]
    for alpha, group in tqdm(passes, desc=method.upper(), disable=not verbose, leave=False):
        entry = (corrupt_writes[0] + alpha * delta[0]) if method == "eap-ig" else None
        _, state, value = _run(model, graph, corrupt, metric, entry=entry, grad=True, receivers=group)
        if value is None or value.ndim != 0:
            raise BadInputError("the metric must return a scalar tensor (e.g. a mean over the batch)")
        last = len(graph.receivers) - 1
        order = sorted(r for r in state.copies if r in group or (r == last and group is groups[0]))
        found = torch.autograd.grad(value, [state.copies[r] for r in order], allow_unused=True)
        for r, g in zip(order, found, strict=True):
            if g is not None:
                grads[r] += g.detach().cpu() / len(alphas)
    scores = torch.einsum("ubpd,rbpd->ur", delta.cpu(), grads)
    scores = scores.masked_fill(~graph.allowed, math.nan)
    with torch.no_grad():
        clean_metric, corrupt_metric = float(metric(model(clean))), float(metric(model(corrupt)))
    return EdgeScores(graph, scores, method, clean_metric, corrupt_metric)


# ----------------------------------------------------------------------------- circuits


@dataclass
class Circuit:
    """A set of edges (``(writer, receiver, score)``) found by edge attribution, with its faithfulness once measured."""

    edges: list[tuple[str, str, float]]
    graph: Graph
    method: str = ""
    faithfulness: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def nodes(self) -> list[str]:
        seen: dict[str, None] = {}
        for writer, receiver, _ in self.edges:
            seen.setdefault(writer)
            seen.setdefault(receiver.split("<")[0])
        return list(seen)

    def mask(self) -> torch.Tensor:
        """``[U, R]``: True on the circuit's edges."""
        writers = {w.name: u for u, w in enumerate(self.graph.writers)}
        receivers = {r.name: i for i, r in enumerate(self.graph.receivers)}
        mask = torch.zeros_like(self.graph.allowed)
        for writer, receiver, _ in self.edges:
            mask[writers[writer], receivers[receiver]] = True
        return mask

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "faithfulness": self.faithfulness,
            "nodes": self.nodes,
            "edges": [{"from": w, "to": r, "score": s} for w, r, s in self.edges],
            **self.details,
        }

    def to_json(self, path: str | Path | None = None) -> str:
        """The circuit as JSON (nodes, edges with scores, faithfulness); written to ``path`` if given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text + "\n")
        return text

    def draw(self, path: str | Path | None = None, ax: Any = None, title: str | None = None) -> Any:
        """Draw the circuit with matplotlib: layers bottom to top, edges blue (helps the metric) or red (hurts),
        as wide as their score. Saves to ``path`` if given; returns the axes."""
        return draw_circuit(self, path, ax, title)


def find_circuit(scores: EdgeScores, n_edges: int | None = None, threshold: float | None = None) -> Circuit:
    """The circuit of the ``n_edges`` edges with the largest ``|score|`` (or those above ``threshold``), pruned to
    the edges on a path from the input to the logits."""
    edges = scores.edges()
    if threshold is not None:
        edges = [e for e in edges if abs(e[2]) >= threshold]
    if n_edges is not None:
        edges = edges[:n_edges]
    kept = _prune(edges)
    return Circuit(kept, scores.graph, scores.method)


def _prune(edges: list[tuple[str, str, float]]) -> list[tuple[str, str, float]]:
    """Drop edges that do not lie on a path from ``input`` to ``logits``."""
    while True:
        readers = {r.split("<")[0] for _, r, _ in edges}
        writers = {w for w, _, _ in edges}
        kept = [
            e
            for e in edges
            if (e[0] == "input" or e[0] in readers) and (e[1] == "logits" or e[1].split("<")[0] in writers)
        ]
        if len(kept) == len(edges):
            return kept
        edges = kept


def faithfulness(
    model: HookedModelLike,
    circuit: Circuit,
    clean: torch.Tensor,
    corrupt: torch.Tensor,
    metric: MetricFn,
    ablation: str = "corrupt",
) -> dict[str, float]:
    """Run the model on ``clean`` with every edge outside ``circuit`` ablated — its write replaced, for that
    receiver only, by the write on ``corrupt`` (``ablation="corrupt"``) or by its mean over the clean batch
    (``"mean"``) — and report the metric: ``circuit``, ``clean`` (nothing ablated), ``empty`` (every edge
    ablated) and ``faithfulness = (circuit - empty) / (clean - empty)``. Also stored on ``circuit``."""
    if ablation not in ("corrupt", "mean"):
        raise BadInputError(f"ablation must be 'corrupt' or 'mean', got {ablation!r}")
    graph = circuit.graph
    device = next(model.hf_model.parameters()).device
    clean, corrupt = clean.to(device), corrupt.to(device)
    if ablation == "corrupt":
        refs = node_writes(model, graph, corrupt)
    else:
        refs = node_writes(model, graph, clean).mean(dim=1, keepdim=True).expand(-1, clean.shape[0], -1, -1)
    inside = circuit.mask()

    def measured(ablate: torch.Tensor) -> float:
        _, _, value = _run(model, graph, clean, metric, ablate=ablate, refs=refs)
        assert value is not None
        return float(value)

    circuit_value = measured(graph.allowed & ~inside)
    empty = measured(graph.allowed.clone())
    with torch.no_grad():
        full = float(metric(model(clean)))
    score = (circuit_value - empty) / (full - empty) if full != empty else math.nan
    circuit.faithfulness = score
    circuit.details.update(metric_circuit=circuit_value, metric_clean=full, metric_empty=empty, ablation=ablation)
    return {"circuit": circuit_value, "clean": full, "empty": empty, "faithfulness": score}


# ----------------------------------------------------------------------------- pictures


def _positions(graph: Graph, names: Sequence[str]) -> dict[str, tuple[float, float]]:
    """Layered coordinates: input at the bottom, each layer's heads and MLP/mixer in a row, logits on top."""
    rows: dict[float, list[str]] = {}
    for name in names:
        if name == "input":
            y = -1.0
        elif name == "logits":
            y = float(graph.n_layers)
        else:
            layer = int(name[1:].split(".")[0])
            y = layer + (0.5 if name.startswith("m") and _mlp_after_attention(graph, layer) else 0.0)
        rows.setdefault(y, []).append(name)
    where: dict[str, tuple[float, float]] = {}
    for y, row in rows.items():
        for i, name in enumerate(sorted(row, key=_name_order)):
            where[name] = (i - (len(row) - 1) / 2, y)
    return where


def _mlp_after_attention(graph: Graph, layer: int) -> bool:
    return any(r.node == f"m{layer}" and r.point == "hook_resid_mid" for r in graph.receivers)


def _name_order(name: str) -> tuple[int, int]:
    if ".h" in name or ".kv" in name:
        return (0, int(name.rsplit("h", 1)[-1]) if ".h" in name else int(name.rsplit("kv", 1)[-1]))
    return (1, 0)


def draw_circuit(circuit: Circuit, path: str | Path | None = None, ax: Any = None, title: str | None = None) -> Any:
    try:
        import matplotlib

        if ax is None:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise BridgeError("drawing a circuit needs matplotlib: pip install bridge-core[viz]") from err
    names = circuit.nodes or ["input", "logits"]
    where = _positions(circuit.graph, names)
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(6, 1.3 * (circuit.graph.n_layers + 2)))
    biggest = max((abs(s) for _, _, s in circuit.edges), default=1.0) or 1.0
    for writer, receiver, score in circuit.edges:
        target = receiver.split("<")[0]
        (x0, y0), (x1, y1) = where[writer], where[target]
        port = receiver[len(target) + 1 : -1] if "<" in receiver else ""
        ax.annotate(
            "",
            xy=(x1, y1),
            xytext=(x0, y0),
            arrowprops=dict(
                arrowstyle="-|>",
                color="tab:blue" if score > 0 else "tab:red",
                lw=0.5 + 4 * abs(score) / biggest,
                alpha=0.8,
                connectionstyle="arc3,rad=0.1",
                shrinkA=10,
                shrinkB=10,
            ),
        )
        if port:
            ax.text((x0 + 2 * x1) / 3, (y0 + 2 * y1) / 3, port, fontsize=7, color="0.3")
    for name, (x, y) in where.items():
        ax.scatter([x], [y], s=500, color="white", edgecolors="black", zorder=3)
        ax.text(x, y, name, ha="center", va="center", fontsize=7, zorder=4)
    xs = [x for x, _ in where.values()] or [0.0]
    ax.set_xlim(min(xs) - 1, max(xs) + 1)
    ax.set_ylim(-1.6, circuit.graph.n_layers + 0.6)
    ax.axis("off")
    label = title or f"{circuit.method} circuit, {len(circuit.edges)} edges"
    if title is None and circuit.faithfulness is not None:
        label += f", faithfulness {circuit.faithfulness:.2f}"
    ax.set_title(label, fontsize=9)
    if own and path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
    return ax


__all__ = [
    "Circuit",
    "EdgeScores",
    "Graph",
    "Node",
    "Receiver",
    "attribute_edges",
    "build_graph",
    "draw_circuit",
    "faithfulness",
    "find_circuit",
    "node_writes",
]
