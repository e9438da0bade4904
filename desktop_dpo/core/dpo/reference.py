"""Reference log-probabilities log π_ref(y|x) of a run's pairs: computed once, cached in SQLite.

A pair's reference values depend only on the pair, the reference model, how its weights were loaded, the
chat template and the maximum length; the cache key holds all of them (:func:`reference_keys`), so a
second epoch, a resume or a second run over the same pairs reads them instead. The reference is the base
with the run's adapter switched off (one model in memory for both roles) or a previous round's model.

torch is imported inside functions.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from desktop_dpo.core.dpo.config import TrainConfig, TrainingOutOfMemoryError, smaller_settings
from desktop_dpo.core.dpo.events import Loading
from desktop_dpo.core.dpo.modeling import compute_dtype, free_memory, is_out_of_memory, out_of_memory_message
from desktop_dpo.core.jobs import CancelToken

if TYPE_CHECKING:
    from desktop_dpo.core.dpo.tokenizing import TokenizedPair
    from desktop_dpo.core.store import Store


def reference_keys(
    pairs: Sequence[TokenizedPair],
    fingerprint: str,
    *,
    device: str,
    quantization: str,
    chat_template: str | None,
    max_length: int,
) -> list[str]:
    """The cache key of each pair's reference values, for the reference model of ``fingerprint``."""
    from desktop_dpo.core.dpo import data as dpo_data
    from desktop_dpo.core.dpo.tokenizing import template_hash

    # How the reference weights were loaded changes its numbers, so it is part of the cache key.
    dtype = str(compute_dtype(device)).removeprefix("torch.")
    loaded_as = f"nf4-{dtype}" if quantization == "nf4" else dtype
    template = template_hash(chat_template)
    return [
        dpo_data.reference_cache_key(pair, fingerprint, loaded_as, template, max_length) for pair in pairs
    ]


def fill_reference(
    store: Store,
    model: Any,
    pairs: Sequence[TokenizedPair],
    keys: Sequence[str],
    missing: Sequence[int],
    reference: dict[str, tuple[float, float]],
    *,
    config: TrainConfig,
    pad_id: int,
    device: str,
    adapter_off: bool,
    cancel: CancelToken,
) -> Generator[Loading, None, float]:
    """Compute the reference values of ``pairs[missing]`` with ``model``, caching each batch at once.

    Adds them to ``reference`` (by key) as they come, yields progress, and returns the seconds spent.

    Raises:
        TrainingOutOfMemoryError: with smaller settings to resume with.
    """
    done, seconds = 0, 0.0
    yield Loading("Computing reference log-probabilities", 0, len(missing))
    started = time.perf_counter()
    try:
        for batch_indices, values in compute_reference(
            model,
            pairs,
            missing,
            batch_size=config.batch_size * 2,  # no activations are kept without gradients
            pad_id=pad_id,
            device=device,
            adapter_off=adapter_off,
            cancel=cancel,
        ):
            new = {keys[i]: value for i, value in zip(batch_indices, values, strict=True)}
            store.put_reference_logps(new)  # cached batch by batch: a stop loses nothing
            reference.update(new)
            done += len(batch_indices)
            seconds += time.perf_counter() - started
            yield Loading("Computing reference log-probabilities", done, len(missing))
            started = time.perf_counter()
    except Exception as exc:
        if is_out_of_memory(exc):
            free_memory(device)
            raise TrainingOutOfMemoryError(
                out_of_memory_message(config, device, "computing reference log-probabilities", None),
                smaller_settings(config),
            ) from exc
        raise
    return seconds


def compute_reference(
    model: Any,
    pairs: Sequence[TokenizedPair],
    indices: Sequence[int],
    *,
    batch_size: int,
    pad_id: int,
    device: str,
    adapter_off: bool,
    cancel: CancelToken,
) -> Iterator[tuple[list[int], list[tuple[float, float]]]]:
    """Reference log-probs of ``pairs[indices]``, one batch at a time (so each batch is cached at once)."""
    import torch

    from desktop_dpo.core.dpo.batches import collate_for, length_batches, to_device
    from desktop_dpo.core.dpo.logps import sequence_logps

    model.eval()
    for batch_indices in length_batches(indices, pairs, batch_size):
        cancel.raise_if_cancelled()
        batch = to_device(collate_for(model, [pairs[i] for i in batch_indices], pad_id), device)
        disabled = model.disable_adapter() if adapter_off else contextlib.nullcontext()
        with torch.inference_mode(), disabled:
            chosen, rejected = sequence_logps(model, batch)
        yield batch_indices, list(zip(chosen.float().tolist(), rejected.float().tolist(), strict=True))
