"""Log-probabilities of responses: :func:`sequence_logps` (log π(y|x), [B] chosen and [B] rejected, of a
batch from :mod:`~desktop_dpo.core.dpo.batches`). The LM head runs only where a response token is
predicted, and on a plain frozen head through :func:`head_token_logps`, which never keeps [tokens, vocab]
logits for the backward pass.

torch is imported lazily.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# Rows of [N, vocab] logits upcast to fp32 at once: about 64 MiB per chunk whatever the vocabulary.
_LOGSUMEXP_CHUNK_ELEMENTS = 1 << 24


def _base_model(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _accepts_logits_to_keep(model: Any) -> bool:
    import inspect

    try:
        return "logits_to_keep" in inspect.signature(_base_model(model).forward).parameters
    except (TypeError, ValueError):
        return False


# What the probe below found out about a model object (weak keys: a freed model leaves no trace).
_FUSED_HEAD_OK: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def _probing(model: Any) -> Iterator[None]:
    """No dropout, no gradients, no RNG use: a probe changes nothing a run depends on."""
    import torch

    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(training)


def _decoder_and_head(model: Any) -> tuple[Any, Any] | None:
    """The model's decoder stack and its plain, frozen linear LM head, when ``lm_head(decoder(x))`` is
    exactly what the model computes (checked once per model on a few tokens: models that scale or cap
    their logits, or put an adapter on the head, take the generic path)."""
    import torch

    base = _base_model(model)
    if not (
        callable(getattr(base, "get_decoder", None))
        and callable(getattr(base, "get_output_embeddings", None))
    ):
        return None
    decoder, head = base.get_decoder(), base.get_output_embeddings()
    if decoder is None or decoder is base or type(head) is not torch.nn.Linear:
        return None
    if head.weight.requires_grad or (head.bias is not None and head.bias.requires_grad):
        return None  # the fused head computes gradients for its input only
    ok = _FUSED_HEAD_OK.get(model)
    if ok is None:
        ids = torch.arange(1, 9, device=head.weight.device).remainder(head.weight.shape[0])[None]
        try:
            with _probing(model):
                expected = model(input_ids=ids, use_cache=False).logits.float()
                got = head(decoder(input_ids=ids, use_cache=False).last_hidden_state).float()
            ok = expected.shape == got.shape and bool(torch.allclose(got, expected, rtol=1e-3, atol=1e-3))
        except Exception:  # any model this does not fit takes the generic path
            log.debug("Fused LM head not used for %s", type(base).__name__, exc_info=True)
            ok = False
        _FUSED_HEAD_OK[model] = ok
    return (decoder, head) if ok else None


@functools.cache
def _fused_head_function() -> Any:
    """The autograd function behind :func:`head_token_logps` (built on first use: torch loads lazily)."""
    import torch
    import torch.nn.functional as F

    class FusedHeadTokenLogps(torch.autograd.Function):
        """log softmax(h·Wᵀ + b)[label] for selected (row, label) pairs, never keeping [rows, vocab] logits.

        The gradient with respect to h is computed in the forward pass, chunk by chunk, while each chunk's
        softmax is at hand: d log p(y | h) / dh = W[y] − Σ_v p_v W[v] = W[y] − E, with E = softmax·W, an
        [rows, hidden] matrix. The backward pass then only scales and adds small rows. Same matrix products
        as autograd through the logits (one forward, one for the gradient), but none of the [rows, vocab]
        temporaries it allocates and walks through (zeros for the gather's and the slices' gradients,
        logsumexp's several passes): about a third of a step at a 32k vocabulary.
        """

        @staticmethod
        def forward(
            ctx: Any,
            hidden: torch.Tensor,
            weight: torch.Tensor,
            bias: torch.Tensor | None,
            rows: torch.Tensor,
            labels: torch.Tensor,
        ) -> torch.Tensor:
            wants_grad = ctx.needs_input_grad[0]
            n_rows, vocab = hidden.shape[0], weight.shape[0]
            chunk = max(1, _LOGSUMEXP_CHUNK_ELEMENTS // max(1, vocab))
            out = torch.empty(rows.shape[0], dtype=torch.float32, device=hidden.device)
            expected = torch.empty_like(hidden) if wants_grad else None
            for start in range(0, n_rows, chunk):
                stop = min(start + chunk, n_rows)
                logp = torch.log_softmax(F.linear(hidden[start:stop], weight, bias).float(), dim=-1)
                here = ((rows >= start) & (rows < stop)).nonzero().squeeze(-1)
                out[here] = logp[rows[here] - start, labels[here]]
                if expected is not None:
                    expected[start:stop] = logp.exp_().to(weight.dtype) @ weight
                del logp
            if expected is not None:
                ctx.save_for_backward(expected, weight, rows, labels)
            return out

        @staticmethod
        def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
            expected, weight, rows, labels = ctx.saved_tensors
            grad = grad_out.float()
            per_row = torch.zeros(expected.shape[0], dtype=torch.float32, device=grad.device).index_add_(
                0, rows, grad
            )
            grad_hidden = expected.float() * -per_row[:, None]
            grad_hidden.index_add_(0, rows, weight[labels].float() * grad[:, None])
            return grad_hidden.to(expected.dtype), None, None, None, None

    return FusedHeadTokenLogps


def head_token_logps(
    hidden: torch.Tensor, head: Any, rows: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Log-probabilities ([N], fp32) of ``labels`` ([N]) at hidden states ``hidden[rows]`` under a frozen
    linear LM head, in fp32, at most ~64 MiB of logits at a time and none kept for the backward pass.

    Args:
        hidden: [M, H] final hidden states of the positions to score (any float dtype; may need gradients).
        head: a ``torch.nn.Linear`` whose weight (and bias) need no gradient.
        rows: [N] index into ``hidden`` for each label (a row may be used by several labels).
        labels: [N] token ids.
    """
    import torch

    if rows.shape[0] == 0:
        return hidden.new_zeros(0, dtype=torch.float32)
    return _fused_head_function().apply(hidden, head.weight, head.bias, rows, labels)


def _token_logps_chunk(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[label] for [n, V] logits and [n] labels, in fp32, without a [n, V] log-softmax:
    log p = logit[label] − logsumexp(logits)."""
    import torch

    logits = logits.float()
    return logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def selected_token_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Log-probabilities ([N], fp32) of ``labels`` ([N]) under ``logits`` ([N, V], any float dtype).

    Works in row chunks so at most ~64 MiB of logits is upcast to fp32 at a time; with gradients on and
    half-precision logits, each chunk is recomputed in the backward pass instead of keeping its fp32
    copy alive (activation checkpointing of a cheap op, to save memory on a large vocabulary).
    """
    import torch
    from torch.utils.checkpoint import checkpoint

    if logits.shape[0] == 0:
        return logits.new_zeros(0, dtype=torch.float32)
    rows = max(1, _LOGSUMEXP_CHUNK_ELEMENTS // max(1, logits.shape[-1]))
    recompute = torch.is_grad_enabled() and logits.requires_grad and logits.dtype != torch.float32
    parts = []
    for start in range(0, logits.shape[0], rows):
        chunk, chunk_labels = logits[start : start + rows], labels[start : start + rows]
        if recompute:
            parts.append(checkpoint(_token_logps_chunk, chunk, chunk_labels, use_reentrant=False))
        else:
            parts.append(_token_logps_chunk(chunk, chunk_labels))
    return torch.cat(parts)


def sequence_logps(
    model: Any, batch: dict[str, torch.Tensor], *, average: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """log π(y|x) of the chosen and the rejected responses of a :func:`collate` or :func:`collate_shared` batch.

    The logit at position t predicts token t + 1 (shift by one), so response token t is scored by
    the hidden state at t − 1. Only those positions reach the LM head: prompt and padding never cost a
    [vocab]-wide row. Each token's log-probability is ``log_softmax(logits)[token]`` in fp32. Where the
    model allows it (a plain frozen linear head, checked once per model) the decoder's hidden states go
    through :func:`head_token_logps`, which keeps no [tokens, vocab] tensor for the backward pass;
    otherwise the model's own logits (``logits_to_keep`` with a boolean mask where supported) go
    through :func:`selected_token_logps`. Both give the same values.

    Args:
        model: a causal LM (a PEFT model too; the adapter state at call time decides policy vs
            reference).
        batch: from :func:`collate` (``input_ids``, ``attention_mask``, ``loss_mask``, each [2B, T]) or
            from :func:`collate_shared` / :func:`collate_for` (each prompt once).
        average: False: sum over response tokens (DPO, hinge). True: mean per response token (what
            IPO uses as TRL computes it).

    Returns:
        ``(chosen, rejected)``, each [B] fp32, carrying gradients when the model does.
    """
    import torch

    if "label_seq" in batch:
        return _shared_sequence_logps(model, batch, average=average)
    input_ids = batch["input_ids"]
    device = input_ids.device
    attention_mask = batch["attention_mask"].to(device)
    # target_mask[:, t] says: the logit at t predicts a response token (the token at t + 1).
    target_mask = torch.zeros_like(input_ids, dtype=torch.bool)
    target_mask[:, :-1] = batch["loss_mask"].to(device)[:, 1:].bool()
    labels = input_ids[:, 1:][target_mask[:, :-1]]  # [N], row-major like the mask

    parts = _decoder_and_head(model)
    if parts is not None:
        decoder, head = parts
        hidden = decoder(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state
        rows = torch.arange(labels.shape[0], device=device)
        token_logps = head_token_logps(hidden[target_mask], head, rows, labels)  # [N] fp32
    else:
        logits = None
        if _accepts_logits_to_keep(model):
            out = model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                use_cache=False,
                logits_to_keep=target_mask,
            )
            if out.logits.dim() == 2 and out.logits.shape[0] == labels.shape[0]:
                logits = out.logits  # [N, V]
        if logits is None:  # the model ignores a boolean logits_to_keep: select after the full forward
            out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            logits = out.logits[target_mask]  # [N, V]
        token_logps = selected_token_logps(logits, labels)  # [N] fp32
    row_of_token = target_mask.nonzero()[:, 0]
    totals = torch.zeros(input_ids.shape[0], dtype=torch.float32, device=device).index_add(
        0, row_of_token, token_logps
    )  # [2B]
    if average:
        totals = totals / target_mask.sum(dim=1).clamp(min=1).to(totals.dtype)
    chosen, rejected = totals.chunk(2, dim=0)
    return chosen, rejected


def _shared_sequence_logps(
    model: Any, batch: dict[str, torch.Tensor], *, average: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sequence_logps` of a :func:`collate_shared` batch."""
    import torch

    parts = _decoder_and_head(model)
    if parts is None:
        raise ValueError("This model cannot score a shared-prompt batch; build batches with collate_for().")
    decoder, head = parts
    device = batch["input_ids"].device
    mask = batch["attention_mask"].to(device)
    if getattr(_base_model(model).config, "_attn_implementation", None) == "eager":
        # Eager attention adds its mask to the scores: 0 where allowed, the dtype's minimum elsewhere.
        dtype = head.weight.dtype
        mask = torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill_(~mask, torch.finfo(dtype).min)
    hidden = decoder(
        input_ids=batch["input_ids"], attention_mask=mask, position_ids=batch["position_ids"].to(device),
        use_cache=False,
    ).last_hidden_state  # fmt: skip
    token_logps = head_token_logps(
        hidden[batch["keep"].to(device)], head, batch["label_rows"].to(device), batch["labels"].to(device)
    )
    n_sequences = batch["response_lengths"].shape[0]
    totals = torch.zeros(n_sequences, dtype=torch.float32, device=device).index_add(
        0, batch["label_seq"].to(device), token_logps
    )  # [2B]
    if average:
        totals = totals / batch["scored_lengths"].to(device).clamp(min=1).to(totals.dtype)
    chosen, rejected = totals.chunk(2, dim=0)
    return chosen, rejected
