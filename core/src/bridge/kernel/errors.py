"""Errors raised by bridge. Every message says what was wrong and what to do."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BridgeError(Exception):
    """Base class of every error bridge raises on purpose."""


class UnknownArchitectureError(BridgeError):
    """No installed plugin provides an adapter for a model."""


class RemoteCodeRequiredError(BridgeError):
    """A repository's config needs its own Python code and ``trust_remote_code`` was not given."""


class AdapterConflictWarning(UserWarning):
    """Two plugins claim the same architecture; the message names both and the winner."""


class PluginLoadWarning(UserWarning):
    """A plugin failed to import or to register its adapters and was skipped."""


class PluginHookWarning(UserWarning):
    """A plugin's ``match_adapter`` raised or returned something that is not an adapter; it was ignored."""


class PluginHookError(BridgeError):
    """A plugin's ``configure`` or ``bridge_ready`` hook raised; the load stopped.

    ``distribution``, ``entry_point`` and ``hook`` name the culprit; ``__cause__`` is its exception.
    """

    def __init__(self, distribution: str, entry_point: str, hook: str, error: BaseException) -> None:
        self.distribution, self.entry_point, self.hook = distribution, entry_point, hook
        super().__init__(
            f"plugin {distribution} ({entry_point}) failed in its `{hook}` hook: {type(error).__name__}: {error}. "
            "The load was stopped and nothing stays attached to the model. Fix or uninstall "
            f"{distribution}, or load without it: BRIDGE_LOAD_PLUGINS lists the distributions to load."
        )


class HookNameError(BridgeError, KeyError):
    """A hook name that the model does not have."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class HookOutputError(BridgeError):
    """A hook returned something that cannot replace the activation (wrong type, dtype or device)."""


class HookShapeError(HookOutputError):
    """A hook returned a tensor whose shape differs from the activation it replaces."""


class BadInputError(BridgeError, ValueError):
    """An input the model cannot run on (tokens out of range, wrong rank or dtype, mismatched mask…)."""


class UnknownArgumentError(BridgeError, TypeError):
    """A keyword argument that the called method does not take."""


class OptInHookError(BridgeError):
    """A hook was added to an opt-in hook point that is not enabled."""


class ComponentMapError(BridgeError):
    """An adapter's component map or example config is wrong (a path that is empty, missing, or given to
    two components); the message names the adapter and the path."""


class NoLMHeadError(BridgeError):
    """Logits or loss were asked of a model without an unembedding."""


def unknown_argument_error(where: str, name: str, known: Iterable[str]) -> UnknownArgumentError:
    """Build the error for a keyword argument ``where`` does not take, suggesting the closest ones."""
    known = sorted(set(known))
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return UnknownArgumentError(
        f"{where}() got an unexpected keyword argument {name!r}.{hint} It takes: {', '.join(known)}."
    )


def unknown_hook_error(name: str, known: Iterable[str]) -> HookNameError:
    """Build the error for a misspelt hook name, suggesting the closest real names."""
    known = list(known)
    prefix, _, tail = name.rpartition(".")
    close = []
    if tail in ("hook_in", "hook_out"):  # TransformerLens 4's component-boundary names: the residual stream here
        block = ".".join(prefix.split(".")[:2]) + "." if prefix.startswith("blocks.") else ""
        close = [f"{block}hook_{stream}" for stream in _STREAMS if f"{block}hook_{stream}" in known]
    close += [c for c in difflib.get_close_matches(name, known, n=4, cutoff=0.6) if c not in close]
    if not close:
        close = sorted({k for k in known if k.endswith(tail)})[:4]
    hint = f" Did you mean {', '.join(repr(c) for c in close[:5])}?" if close else ""
    return HookNameError(f"No hook point named {name!r}.{hint} `model.hook_dict` lists all {len(known)} hook points.")


#: Residual-stream hooks, offered first for an unknown TransformerLens 4 ``hook_in``/``hook_out`` name.
_STREAMS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")
