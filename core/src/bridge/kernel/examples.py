"""Examples: what tests and benchmarks need to know about an adapter, kept out of the adapter itself.

An adapter is runtime data (config normalization, a component map). Its tiny test configs, the inputs the
conformance kit feeds, and how the kit reads HF's references live in an ``Examples`` class next to it, in the
family's example module, registered through the ``register_examples`` hook. ``bridge.load`` never reads them;
the kit (``bridge.testing``), ``pytest --bridge-conformance``, ``bridge inspect`` and ``make bench`` do.

    class GPT2Examples(Examples):
        adapter = GPT2Adapter

        @classmethod
        def example_config(cls, architecture=None):
            return GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=TINY_VOCAB,
                              architectures=[architecture or "GPT2LMHeadModel"])
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from bridge.kernel.adapter import Adapter, ExampleInput
from bridge.kernel.errors import ComponentMapError


class Examples:
    """The test-time facts of one adapter. Subclass it per adapter, set ``adapter``, define ``example_config``
    and override what differs from the defaults."""

    #: The adapter these examples describe.
    adapter: ClassVar[type[Adapter]]
    #: Hook-name suffixes whose tensors none of the model's outputs read (a pooled output a classification
    #: head ignores): the conformance kit's ``check_every_hook_matters`` leaves them out, and says so.
    unread_hooks: ClassVar[tuple[str, ...]] = ()
    #: Whether a sequence gets, on its real tokens, the same results left-padded in a batch (with its attention
    #: mask and the positions the mask implies) as alone. ``False`` where HF's own forward reads absolute positions
    #: the mask does not shift (Llama 4's attention temperature): the kit then compares the padded batch with HF's
    #: on the same batch only.
    left_padding_invariant: ClassVar[bool] = True

    @classmethod
    def example_config(cls, architecture: str | None = None) -> Any:
        """A tiny HF config of the adapter's architecture ``architecture`` (default: its first) for tests; its
        ``architectures`` names the HF class to build."""
        raise NotImplementedError(f"{cls.__name__} must define example_config()")

    @classmethod
    def conformance_configs(cls) -> dict[str, Any]:
        """Extra tiny HF configs the conformance kit also checks (``pytest --bridge-conformance``,
        ``bridge.testing.conformance_params``), by a short id: post-LN variants, RoPE scaling, sliding
        windows… Each config's ``architectures`` names the HF class. Default: none."""
        return {}

    @classmethod
    def example_input(cls, hf_config: Any, batch: int = 2, seed: int = 0) -> ExampleInput | None:
        """Inputs for the conformance kit when the model does not read tokens alone (``None``: random tokens)."""
        return None

    @classmethod
    def reference_model(cls, model_class: type, directory: Any) -> nn.Module:
        """The independent HF model the conformance kit compares with (eager attention by default).

        Override when HF's eager path deliberately differs from the semantics the bridge follows."""
        return model_class.from_pretrained(directory, attn_implementation="eager").eval()

    @classmethod
    def reference_part(
        cls, adapter: Adapter, prefix: str, n_layers: int, reference: nn.Module, inputs: Any, output: Any
    ) -> tuple[Any, tuple[str, ...]]:
        """For the conformance kit: the HF output holding one part's ``hidden_states`` and eager ``attentions``
        (``prefix`` ``""``: the model itself, or a composite model's root tower; else a tower's prefix without
        the dot), and the hook (relative to the part) each hidden state equals, as ``hidden_state_hooks``.
        ``output`` is the reference's output on ``inputs`` with hidden states and attentions. Default: the
        adapter's ``tower_outputs`` field of ``output`` (``output`` itself for the model) and its
        ``hidden_state_hooks(n_layers)``. Override when a tower's outputs are not in the model's output (run
        ``reference``'s tower instead)."""
        field = adapter.tower_outputs.get(prefix)
        return (getattr(output, field) if field else output), type(adapter).hidden_state_hooks(n_layers)

    @classmethod
    def stream_injections(cls, hf_config: Any) -> tuple[str, ...]:
        """The ``hook_resid_pre`` hook names (full names) whose block reads more than the previous block's output:
        the model adds something to the residual stream between the two (Qwen3-VL's DeepStack image features after
        its first language-model blocks). The conformance kit does not require those to equal the previous block's
        ``hook_resid_post``; the family's own tests check what is added. Default: none."""
        return ()

    @classmethod
    def tiny_config(cls, architecture: str | None = None) -> Any:
        """``example_config(architecture)``, checked: it must name the HF class to build in ``architectures``
        (raises ``ComponentMapError`` naming the examples otherwise). The conformance kit builds from it."""
        import transformers

        config = cls.example_config(architecture)
        names = getattr(config, "architectures", None)
        if not names or not isinstance(names[0], str) or not hasattr(transformers, names[0]):
            architectures = cls.adapter.architectures
            wanted = architecture or (architectures[0] if architectures else "<HF model class name>")
            raise ComponentMapError(
                f"{cls.__name__}.example_config({architecture!r}) returned a {type(config).__name__} whose "
                f"architectures is {names!r}; the kit builds the model class it names, so set "
                f"architectures=[{wanted!r}] (a class in transformers) on the config."
            )
        return config

    @classmethod
    def describe(cls) -> str:
        return f"{cls.__module__}.{cls.__qualname__}"


def is_examples(value: Any) -> bool:
    """Whether ``value`` is an ``Examples`` subclass naming its adapter."""
    return isinstance(value, type) and issubclass(value, Examples) and isinstance(getattr(value, "adapter", None), type)


__all__ = ["ExampleInput", "Examples", "is_examples"]
