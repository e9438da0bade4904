"""KTO's single labels as token ids and batches, and its loss inside a training session.

A labelled answer becomes a :class:`TokenizedLabel`: a :class:`~desktop_dpo.core.dpo.tokenizing.TokenizedPair`
whose "chosen" sequence is the answer and whose "rejected" sequence is the *mismatched* answer KTO's KL
estimate needs (another example's answer after this prompt, :func:`mismatched_sources`), plus the label.
So everything built for pairs carries over unchanged: :func:`~desktop_dpo.core.dpo.batches.collate_for`
puts the prompt through the model once for both, ``sequence_logps`` returns (answer, mismatched answer)
log-probs in one forward pass, and the reference values (``reference.py``) are computed, cached in SQLite
and reused per example with the same keys (they hash all three token sequences).

Where TRL 1.16 rotates the answers by one inside each batch of its fixed order, here the mismatched answer is
fixed once per run, over the whole split, as a permutation that never pairs a prompt with an answer to the same
prompt where the data allows it (a "both bad" pick gives two answers to one prompt: rotating them would pair
one with the other, which estimates nothing). Each answer is used once as a mismatched one, so over an epoch
the mismatched answers are the same set as the labelled ones, as the paper asks. z0 is then estimated per
micro-batch, as TRL does per device batch.

torch (and ``kto.py``, which needs it) is imported inside functions: the training module imports this one at
start-up.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from desktop_dpo.core.dpo.config import TrainConfig
from desktop_dpo.core.dpo.data import PreferencePair, pairs_from_comparisons
from desktop_dpo.core.dpo.events import EvalMetrics
from desktop_dpo.core.dpo.labels import SingleLabel, labels_from_comparisons, labels_from_replies
from desktop_dpo.core.dpo.tokenizing import (
    TokenizedPair,
    TokenizedPairs,
    counted_and_logged,
    tokenize_pair,
    tokenize_pairs,
    truncation_sentence,
)
from desktop_dpo.core.store import ComparisonView, RunRow, Store

if TYPE_CHECKING:
    import torch

    from desktop_dpo.core.dpo.kto import KtoLossOutput


@dataclass(frozen=True)
class TokenizedLabel(TokenizedPair):
    """A labelled answer as token ids: ``prompt_ids + chosen_ids`` is the answer, ``prompt_ids +
    rejected_ids`` the mismatched answer for the KL estimate (never trained on, never reported)."""

    desirable: bool = True


def mismatched_sources(prompt_ids: Sequence[int]) -> list[int]:
    """For each example, the index of the example whose answer serves as its mismatched answer.

    A permutation (each answer used once) that gives no example an answer to its own prompt unless one prompt
    holds more than half the examples: the examples sorted by prompt, each takes the answer ``m`` places
    further on (``m`` the largest number of examples of one prompt), which always lands in another prompt.
    Deterministic: it depends on the prompt ids and their order only.
    """
    n = len(prompt_ids)
    if n < 2:
        return list(range(n))
    order = sorted(range(n), key=lambda i: (prompt_ids[i], i))
    largest = max(Counter(prompt_ids).values())
    shift = largest if largest <= n - largest else max(1, n - largest)
    sources = [0] * n
    for k, i in enumerate(order):
        sources[i] = order[(k + shift) % n]
    return sources


@dataclass(frozen=True)
class TokenizedLabels:
    """The result of :func:`tokenize_labels`, with the counts a person should be told about."""

    pairs: list[TokenizedLabel]  # named as TokenizedPairs' field: the session treats both alike
    truncated: int  # answers cut to fit max_length
    prompt_truncated: int  # answers whose prompt lost older turns or was cut from the left

    def truncation_message(self) -> str | None:
        """A sentence for the run log, or None when nothing was cut."""
        return truncation_sentence(
            self.truncated, len(self.pairs), self.prompt_truncated, "answers", "an answer"
        )


def tokenize_labels(
    tokenizer: Any,
    parts: Sequence[Sequence[SingleLabel]],
    *,
    chat_template: str | None,
    max_length: int,
    max_prompt_length: int,
    sources: Sequence[Sequence[int]] | None = None,
) -> TokenizedLabels:
    """Token ids of labelled answers, each with its mismatched answer, in order (``parts`` one after another).

    Each answer is tokenized as :func:`~desktop_dpo.core.dpo.tokenizing.tokenize_pair` tokenizes a response
    (same rendering, same truncation rules). Within each part (the training labels, the held-out ones) the
    mismatched answers come from :func:`mismatched_sources`, or from ``sources`` (one index list per part:
    the oracle test passes TRL's rotation); a mismatched answer is cut to fit ``max_length`` after its prompt,
    silently (it only feeds the KL estimate), as TRL's collator cuts it.
    """
    result: list[TokenizedLabel] = []
    for number, labels in enumerate(parts):
        singles = [
            tokenize_pair(
                tokenizer,
                PreferencePair(
                    label.comparison_id, label.prompt_id, label.messages, label.completion, label.completion
                ),
                chat_template=chat_template,
                max_length=max_length,
                max_prompt_length=max_prompt_length,
            )
            for label in labels
        ]
        part_sources = (
            list(sources[number])
            if sources is not None
            else mismatched_sources([x.prompt_id for x in labels])
        )
        for single, label, source in zip(singles, labels, part_sources, strict=True):
            mismatched = singles[source].chosen_ids[: max(1, max_length - len(single.prompt_ids))]
            result.append(
                TokenizedLabel(
                    comparison_id=single.comparison_id,
                    prompt_id=single.prompt_id,
                    prompt_ids=single.prompt_ids,
                    chosen_ids=single.chosen_ids,
                    rejected_ids=mismatched,
                    truncated=single.truncated,
                    prompt_truncated=single.prompt_truncated,
                    desirable=label.desirable,
                )
            )
    return counted_and_logged(TokenizedLabels, result)


def training_texts(
    config: TrainConfig,
    views: Iterable[ComparisonView],
    store: Store | None = None,
    run: RunRow | None = None,
) -> list[PreferencePair] | list[SingleLabel]:
    """What a run with ``config`` learns from: single labels for KTO, preference pairs for every other loss.

    A KTO run (given its ``store`` and ``run``) also learns from the chat replies rated in its snapshot
    (``run.reply_label_ids``: :func:`~desktop_dpo.core.dpo.labels.labels_from_replies`), after the labels of
    its comparisons.
    """
    if config.loss_type == "kto":
        replies = store.reply_labels(ids=run.reply_label_ids) if store and run and run.reply_label_ids else []
        return [*labels_from_comparisons(views), *labels_from_replies(replies)]
    return pairs_from_comparisons(views)


class Session(Protocol):
    """What a training session (``train._Session``) holds that these functions read."""

    config: TrainConfig
    chat_template: str | None
    train_text: Sequence[Any]  # from training_texts: pairs, or single labels for KTO
    heldout_text: Sequence[Any]
    pairs: Sequence[TokenizedPair]  # TokenizedLabel for KTO
    keys: Sequence[str]  # the reference cache key of each
    reference: dict[str, tuple[float, float]]  # reference values by key


def tokenize_run(tokenizer: Any, session: Session) -> tuple[TokenizedPairs | TokenizedLabels, TrainConfig]:
    """Token ids of a session's training texts then its held-out ones (from :func:`training_texts`), and its
    settings with KTO's weights filled in from the training labels (:func:`with_balanced_weights`)."""
    config, train, heldout = session.config, session.train_text, session.heldout_text
    if config.loss_type != "kto":
        tokenized = tokenize_pairs(
            tokenizer,
            [*train, *heldout],
            chat_template=session.chat_template,
            max_length=config.max_length,
            max_prompt_length=config.max_prompt_length,
        )
        return tokenized, config
    labels = tokenize_labels(
        tokenizer,
        [train, heldout],
        chat_template=session.chat_template,
        max_length=config.max_length,
        max_prompt_length=config.max_prompt_length,
    )
    return labels, with_balanced_weights(config, labels.pairs[: len(train)])


def with_balanced_weights(config: TrainConfig, train: Sequence[TokenizedLabel]) -> TrainConfig:
    """``config`` with λ_D and λ_U filled in from the training labels (:func:`~desktop_dpo.core.dpo.kto.
    balanced_weights`) where the run left them to the data (None); a weight set by hand stays."""
    from desktop_dpo.core.dpo.kto import balanced_weights

    desirable = sum(1 for x in train if x.desirable)
    auto_d, auto_u = balanced_weights(desirable, len(train) - desirable)
    return config.replace(
        desirable_weight=auto_d if config.desirable_weight is None else config.desirable_weight,
        undesirable_weight=auto_u if config.undesirable_weight is None else config.undesirable_weight,
    )


def session_kto_loss(
    session: Session, indices: Sequence[int], policy_logps: torch.Tensor, policy_kl_logps: torch.Tensor
) -> KtoLossOutput:
    """The KTO loss of one micro-batch of a training session (``session.pairs[indices]`` are
    :class:`TokenizedLabel`; ``policy_logps`` and ``policy_kl_logps`` [B] score their answers and mismatched
    answers) against the cached reference values: (answer, mismatched answer) per key, as for a pair."""
    import torch

    from desktop_dpo.core.dpo.kto import kto_loss

    config, pairs, device = session.config, session.pairs, policy_logps.device
    values = [session.reference[session.keys[i]] for i in indices]
    return kto_loss(
        policy_logps,
        torch.tensor([v[0] for v in values], dtype=torch.float32, device=device),
        policy_kl_logps,
        torch.tensor([v[1] for v in values], dtype=torch.float32, device=device),
        torch.tensor([bool(getattr(pairs[i], "desirable", True)) for i in indices], device=device),
        beta=config.beta,
        desirable_weight=config.desirable_weight or 1.0,
        undesirable_weight=config.undesirable_weight or 1.0,
    )


def heldout_metrics(outputs: Sequence[KtoLossOutput], *, step: int, examples: int) -> EvalMetrics:
    """The held-out numbers of a KTO run from its evaluation batches (see :func:`~desktop_dpo.core.dpo.kto.
    kto_metrics`: accuracy is the share of answers on the side of z0 their label asks for)."""
    import torch

    from desktop_dpo.core.dpo.kto import KtoLossOutput, kto_metrics

    merged = KtoLossOutput(*(torch.cat(parts) for parts in zip(*outputs, strict=True)))
    metrics = kto_metrics(merged)
    return EvalMetrics(
        step=step,
        loss=merged.losses.float().mean().item(),
        accuracy=metrics["rewards/accuracies"],
        margins=metrics["rewards/margins"],
        rewards_chosen=metrics["rewards/chosen"],
        rewards_rejected=metrics["rewards/rejected"],
        pairs=examples,
    )
