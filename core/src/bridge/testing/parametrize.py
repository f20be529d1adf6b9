"""One line per family: the conformance kit as a parametrized pytest test.

    # tests/test_myfamily_conformance.py
    from bridge.testing import conformance_test
    from my_family import ADAPTERS

    test_conformance = conformance_test(ADAPTERS)

Cases are every check × every model × every attention path, where the models of an adapter are its
``architectures`` (each built from ``example_config(architecture)``), the ``extra`` names given here
(also passed to ``example_config``), and its ``conformance_configs()``. Each tiny model is saved once
per test session; every case loads it afresh.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.testing.checks import ALL_CHECKS
from bridge.testing.examples import AdapterLike, adapter_of, examples_of
from bridge.testing.fixtures import save_tiny_model
from bridge.testing.pair import AttnPath, make_pair

PATHS: tuple[AttnPath, ...] = ("native", "hooked")


@dataclass(frozen=True)
class ConformanceModel:
    """One tiny model the kit checks: an adapter (or its examples) and a name for ``example_config`` (or a
    config of its own)."""

    adapter: AdapterLike
    name: str | None
    config: Any = None

    @property
    def id(self) -> str:
        return self.name or self.adapter.__name__


def conformance_models(adapters: Iterable[AdapterLike], extra: Sequence[str] = ()) -> list[ConformanceModel]:
    """Every model of ``adapters`` (adapter classes whose plugins registered their ``Examples``, or
    ``Examples`` classes): each architecture, each ``extra`` name (to the first adapter whose
    ``example_config`` accepts it), and each of its examples' ``conformance_configs()``."""
    adapters = list(adapters)
    models = [ConformanceModel(a, name) for a in adapters for name in adapter_of(a).architectures or (None,)]
    for name in extra:
        models.append(ConformanceModel(_adapter_for(adapters, name), name))
    for adapter in adapters:
        variants = examples_of(adapter).conformance_configs()
        models += [ConformanceModel(adapter, key, config) for key, config in variants.items()]
    return models


def _adapter_for(adapters: list[AdapterLike], name: str) -> AdapterLike:
    for adapter in adapters:
        try:
            examples_of(adapter).example_config(name)
        except (KeyError, ValueError, NotImplementedError):
            continue
        return adapter
    raise ValueError(f"no adapter among {[a.__name__ for a in adapters]} has an example_config({name!r})")


_SAVED: dict[tuple[str, str | None], Path] = {}


def model_directory(model: ConformanceModel, tmp_path_factory: Any) -> Path:
    """The session's saved copy of ``model`` (saved on first use)."""
    key = (examples_of(model.adapter).describe(), model.id)
    if key not in _SAVED or not (_SAVED[key] / "config.json").exists():
        directory = tmp_path_factory.mktemp(model.id.replace("/", "-"))
        if model.config is not None:
            save_tiny_model(model.config, directory)
        _SAVED[key] = directory
    return _SAVED[key]


def conformance_params(
    adapters: Iterable[AdapterLike],
    paths: Sequence[AttnPath] = PATHS,
    extra: Sequence[str] = (),
    checks: Sequence[Callable[..., None]] = ALL_CHECKS,
) -> list[Any]:
    """``pytest.param(model, path, check)`` for every case, with ids like ``GPT2LMHeadModel-native-check_shapes``;
    the cases of ``conformance_configs()`` (real-checkpoint variants) carry the ``variants`` mark. A check that
    declares the paths it is worth running on (``conformance_check(paths=("native",))``: it forces every hook
    itself) runs on those only."""
    import pytest

    return [
        pytest.param(
            model,
            path,
            check,
            id=f"{model.id}-{path}-{check.__name__}",
            marks=[pytest.mark.variants] if model.config is not None else [],
        )
        for model in conformance_models(adapters, extra)
        for path in paths
        for check in checks
        if path in _paths_of(check, paths)
    ]


def _paths_of(check: Callable[..., None], paths: Sequence[AttnPath]) -> tuple[AttnPath, ...]:
    """The requested ``paths`` the check is worth running on (its ``paths``; the first requested one if none)."""
    wanted = tuple(p for p in paths if p in getattr(check, "paths", PATHS))
    return wanted or tuple(paths[:1])


def conformance_test(
    adapters: Iterable[AdapterLike],
    paths: Sequence[AttnPath] = PATHS,
    extra: Sequence[str] = (),
    checks: Sequence[Callable[..., None]] = ALL_CHECKS,
) -> Callable[..., None]:
    """A pytest test function running every check of the kit on every model of ``adapters`` (assign it
    to a ``test_…`` name in a test module). ``paths``: ``("native",)`` for models without attention."""
    import pytest

    @pytest.mark.parametrize(("model", "path", "check"), conformance_params(adapters, paths, extra, checks))
    def test_conformance(model: ConformanceModel, path: AttnPath, check: Callable[..., None], tmp_path_factory):
        directory = model_directory(model, tmp_path_factory)
        check(make_pair(model.adapter, model.name, path, directory=directory))

    return test_conformance


def lifecycle_tests(
    adapters: Iterable[AdapterLike], machine: AdapterLike, max_examples: int = 40
) -> tuple[Callable[..., None], Callable[..., None], Callable[..., None]]:
    """Core's lifecycle kit as three pytest tests for a family (assign them to ``test_…`` names):

        test_ownership, test_hooked_norms_bf16, test_lifecycle_machine = lifecycle_tests(ADAPTERS, machine=MyAdapter)

    ``check_ownership`` and bf16 ``check_hooked_norms_match_hf`` on every architecture of ``adapters``, and the
    hook-lifecycle state machine (``max_examples`` runs) on ``machine``'s first architecture."""
    import pytest
    import torch

    from bridge.testing.lifecycle import check_lifecycle, check_ownership
    from bridge.testing.numerics import check_hooked_norms_match_hf

    models = [
        pytest.param(a, arch, id=arch or adapter_of(a).__name__)
        for a in adapters
        for arch in adapter_of(a).architectures or (None,)
    ]

    @pytest.mark.parametrize(("adapter", "architecture"), models)
    def test_each_model_is_owned_by_one_bridge(adapter: AdapterLike, architecture: str) -> None:
        check_ownership(adapter, architecture)

    @pytest.mark.parametrize(("adapter", "architecture"), models)
    def test_hooked_norms_give_hf_bf16_output_bit_for_bit(adapter: AdapterLike, architecture: str) -> None:
        check_hooked_norms_match_hf(adapter, architecture, dtype=torch.bfloat16)

    def test_hook_lifecycle_state_machine() -> None:
        check_lifecycle(machine, ownership=False, max_examples=max_examples)

    return (
        test_each_model_is_owned_by_one_bridge,
        test_hooked_norms_give_hf_bf16_output_bit_for_bit,
        (test_hook_lifecycle_state_machine),
    )
