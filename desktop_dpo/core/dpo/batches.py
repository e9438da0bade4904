"""Batches of tokenized pairs: :func:`collate` (TRL's 2B padded rows), :func:`collate_shared` (each prompt
once, pairs packed into rows) and :func:`collate_for`, which picks the shared layout where the model scores
it correctly (checked once per model). Either batch goes to
:func:`~desktop_dpo.core.dpo.logps.sequence_logps` and gives the same log-probabilities.

torch is imported lazily.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from desktop_dpo.core.dpo.logps import _base_model, _decoder_and_head, _probing, sequence_logps
from desktop_dpo.core.dpo.tokenizing import TokenizedPair

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# Whether a model scores a shared-prompt batch correctly (weak keys: a freed model leaves no trace).
_SHARED_LAYOUT_OK: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def collate(pairs: Sequence[TokenizedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad B pairs into one batch of 2B rows: the B chosen sequences, then the B rejected ones.

    Returns ``input_ids`` [2B, T] (right-padded with ``pad_id``), ``attention_mask`` [2B, T] (1 on
    real tokens) and ``loss_mask`` [2B, T] (1 on response tokens only: never prompt, never padding).
    One forward pass then scores both sides, and row i and row B + i belong to the same pair.
    """
    import torch

    if not pairs:
        raise ValueError("Cannot collate an empty list of pairs.")
    rows = [(p.prompt_ids, p.chosen_ids) for p in pairs] + [(p.prompt_ids, p.rejected_ids) for p in pairs]
    width = max(len(prompt) + len(response) for prompt, response in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    loss_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, (prompt, response) in enumerate(rows):
        n_prompt, n_total = len(prompt), len(prompt) + len(response)
        input_ids[row, :n_total] = torch.tensor(list(prompt) + list(response), dtype=torch.long)
        attention_mask[row, :n_total] = 1
        loss_mask[row, n_prompt:n_total] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "loss_mask": loss_mask}


def response_lengths(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Response token counts ([B] chosen, [B] rejected) of a :func:`collate` or :func:`collate_shared` batch
    (for IPO)."""
    if "response_lengths" in batch:
        return batch["response_lengths"].chunk(2, dim=0)
    return batch["loss_mask"].sum(dim=1).chunk(2, dim=0)


def batch_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens of the 2B sequences of a batch, padding excluded, counted as :func:`collate` lays them out
    (a shared prompt counts for both of its sequences, so the figure does not depend on the layout)."""
    if "sequence_tokens" in batch:
        return int(batch["sequence_tokens"])
    return int(batch["attention_mask"].sum())


def collate_shared(pairs: Sequence[TokenizedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """B pairs with each prompt computed once: one segment ``prompt + chosen + rejected`` per pair, packed into rows.

    In a segment the rejected tokens attend to the prompt and to earlier rejected tokens, never to the chosen
    ones, and their positions continue from the end of the prompt (``position_ids``): each response sees
    exactly what it sees in its own :func:`collate` row, so the log-probabilities are the same, but the prompt
    goes through the model once instead of twice. Segments are packed first-fit-decreasing into rows no longer
    than the longest segment (a row may hold several short pairs, each attending only within itself), so
    almost no padding is left and no row is longer than the longest pair needs.

    Returns a dict of tensors (R rows of width L, N scored tokens)::

        input_ids        [R, L]  (padding = pad_id)
        position_ids     [R, L]
        attention_mask   [R, 1, L, L] bool, True where a query (row) may attend a key (column); a padding
                         position attends itself only, so no softmax row is empty
        keep             [R, L] bool: positions whose hidden state predicts a response token (each once: the
                         last prompt token predicts the first token of both responses)
        label_rows       [N] index of the predicting position among the kept ones (row-major order)
        labels           [N] the predicted tokens
        label_seq        [N] the sequence each token belongs to: i = chosen of pair i, B + i = its rejected
        scored_lengths   [2B] scored tokens per sequence (what ``average=True`` divides by)
        response_lengths [2B] response tokens per sequence (:func:`response_lengths`)
        sequence_tokens  []  tokens of the 2B sequences (:func:`batch_tokens`)
    """
    import torch

    if not pairs:
        raise ValueError("Cannot collate an empty list of pairs.")
    sizes = [len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs]
    width = max(sizes)
    # First-fit decreasing: the longest pairs open rows, shorter ones fill the gaps.
    free: list[int] = []  # room left in each row
    place: dict[int, tuple[int, int]] = {}  # pair -> (row, offset)
    for i in sorted(range(len(pairs)), key=lambda i: -sizes[i]):
        row = next((r for r, room in enumerate(free) if room >= sizes[i]), None)
        if row is None:
            free.append(width)
            row = len(free) - 1
        place[i] = (row, width - free[row])
        free[row] -= sizes[i]

    n_rows, n_pairs = len(free), len(pairs)
    input_ids = torch.full((n_rows, width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((n_rows, width), dtype=torch.long)
    mask = torch.eye(width, dtype=torch.bool).repeat(n_rows, 1, 1)  # padding attends itself
    keep = torch.zeros((n_rows, width), dtype=torch.bool)
    scored: list[tuple[int, int, int, int]] = []  # (row, predicting column, token, sequence)
    response_lengths_ = [0] * (2 * n_pairs)
    for i, pair in enumerate(pairs):
        row, at = place[i]
        n_prompt, n_chosen, n_rejected = len(pair.prompt_ids), len(pair.chosen_ids), len(pair.rejected_ids)
        size, rejected_at = sizes[i], n_prompt + n_chosen
        input_ids[row, at : at + size] = torch.tensor(
            [*pair.prompt_ids, *pair.chosen_ids, *pair.rejected_ids], dtype=torch.long
        )
        position_ids[row, at : at + size] = torch.tensor(
            [*range(rejected_at), *range(n_prompt, n_prompt + n_rejected)], dtype=torch.long
        )
        block = torch.ones((size, size), dtype=torch.bool).tril_()
        block[rejected_at:, n_prompt:rejected_at] = False  # the rejected response never sees the chosen one
        mask[row, at : at + size, at : at + size] = block
        # Token t of a response is predicted by the position before it in its own sequence; for the
        # first rejected token that is the last prompt token (its sequence skips the chosen response).
        for j, token in enumerate(pair.chosen_ids):
            if n_prompt + j - 1 >= 0:
                scored.append((row, at + n_prompt + j - 1, token, i))
        for j, token in enumerate(pair.rejected_ids):
            before = n_prompt - 1 if j == 0 else rejected_at + j - 1
            if before >= 0:
                scored.append((row, at + before, token, n_pairs + i))
        response_lengths_[i], response_lengths_[n_pairs + i] = n_chosen, n_rejected
    rows = torch.tensor([s[0] for s in scored], dtype=torch.long)
    columns = torch.tensor([s[1] for s in scored], dtype=torch.long)
    keep[rows, columns] = True
    kept_index = (keep.flatten().cumsum(0) - 1).view(n_rows, width)
    label_seq = torch.tensor([s[3] for s in scored], dtype=torch.long)
    return {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "attention_mask": mask.unsqueeze(1),
        "keep": keep,
        "label_rows": kept_index[rows, columns],
        "labels": torch.tensor([s[2] for s in scored], dtype=torch.long),
        "label_seq": label_seq,
        "scored_lengths": torch.bincount(label_seq, minlength=2 * n_pairs),
        "response_lengths": torch.tensor(response_lengths_, dtype=torch.long),
        "sequence_tokens": torch.tensor(
            sum(2 * len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
        ),
    }


def length_batches(indices: Sequence[int], pairs: Sequence[TokenizedPair], size: int) -> list[list[int]]:
    """Split ``indices`` into batches of ``size``, grouping similar lengths (less padding, same sums)."""

    def length(i: int) -> int:
        return len(pairs[i].prompt_ids) + max(len(pairs[i].chosen_ids), len(pairs[i].rejected_ids))

    ordered = sorted(indices, key=length)
    return [ordered[start : start + size] for start in range(0, len(ordered), size)]


def to_device(batch: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    """Every tensor of a batch on ``device``."""
    return {key: value.to(device) for key, value in batch.items()}


def collate_for(model: Any, pairs: Sequence[TokenizedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """The fastest batch layout ``model`` scores correctly: :func:`collate_shared` where it can, else
    :func:`collate`. Either goes to :func:`sequence_logps` and gives the same log-probabilities."""
    batch = None
    if _shared_layout_ok(model):
        batch = collate_shared(pairs, pad_id)
        window = getattr(_base_model(model).config, "sliding_window", None)
        if isinstance(window, int) and batch["input_ids"].shape[1] > window:
            batch = None  # a custom mask replaces the sliding window: only safe while rows fit in it
    return batch if batch is not None else collate(pairs, pad_id)


def _shared_layout_ok(model: Any) -> bool:
    """Whether ``model`` scores a :func:`collate_shared` batch as it scores :func:`collate` (checked once on
    two small pairs): it needs the fused head path, an attention that takes a custom 4D mask (sdpa, eager)
    and positions from ``position_ids``."""
    import torch

    parts = _decoder_and_head(model)
    if parts is None:
        return False
    if getattr(_base_model(model).config, "_attn_implementation", None) not in ("sdpa", "eager"):
        return False
    ok = _SHARED_LAYOUT_OK.get(model)
    if ok is None:
        vocab = parts[1].weight.shape[0]
        pairs = [
            TokenizedPair(
                0, 0, tuple(t % vocab for t in p), tuple(t % vocab for t in c), tuple(t % vocab for t in r)
            )
            for p, c, r in [((1, 5, 6, 7), (8, 9, 10), (11, 12)), ((1, 13), (14, 15), (16, 17, 18, 19, 20))]
        ]
        device = parts[1].weight.device
        try:
            with _probing(model):
                shared = {k: v.to(device) for k, v in collate_shared(pairs, 0).items()}
                padded = {k: v.to(device) for k, v in collate(pairs, 0).items()}
                expected = torch.cat(sequence_logps(model, padded))
                got = torch.cat(sequence_logps(model, shared))
            ok = bool(torch.allclose(got, expected, rtol=1e-3, atol=1e-3))
        except Exception:
            log.debug(
                "Shared-prompt layout not used for %s", type(_base_model(model)).__name__, exc_info=True
            )
            ok = False
        _SHARED_LAYOUT_OK[model] = ok
    return ok
