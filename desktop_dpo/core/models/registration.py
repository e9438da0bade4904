"""Recording a model in the :class:`~desktop_dpo.core.store.Store`: :func:`register_model` inspects it,
fingerprints it and writes its row (the store itself imports no other core module)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from desktop_dpo.core.models.fingerprints import fingerprint
from desktop_dpo.core.models.inspection import inspect_model

if TYPE_CHECKING:
    from desktop_dpo.core.store import ModelRow, Store

# --------------------------------------------------------------------------------------------------------
# Register
# --------------------------------------------------------------------------------------------------------


def register_model(
    store: Store,
    path: str | Path,
    *,
    source: str = "user",
    allow_pickle: bool = False,
    name: str | None = None,
    parent_model_id: int | None = None,
    run_id: int | None = None,
) -> ModelRow:
    """Inspect, fingerprint and record a model (or update the entry with the same path). Returns its row.

    Args:
        store: the calling thread's store.
        path: an HF folder or a GGUF file.
        source: where it came from: user | hf_cache | lmstudio | ollama | aligned | demo | imported.
        allow_pickle: the person accepted pickle-only weights for this model (see :func:`inspect_model`).
        name: what to call it (e.g. a discovered model's label); default: the name in its metadata.
        parent_model_id: the model it was made from (a trainable copy's GGUF, an aligned model's base).
        run_id: the training run that made it (an aligned model), so its lineage can be shown.

    Raises:
        ModelError: the model cannot be used (the message says why and what to do).
    """
    info = inspect_model(path, allow_pickle=allow_pickle)
    model_id = store.add_model(
        name=name or info.name,
        path=info.path,
        kind=info.kind,
        fingerprint=fingerprint(info.path),
        source=source,
        info=info.to_dict(),
        parent_model_id=parent_model_id,
        run_id=run_id,
    )
    row = store.get_model(model_id)
    assert row is not None  # just written in this thread
    return row
