"""Oracle: our SFT-phase loss equals TRL 1.16's ``SFTTrainer`` loss on the same tiny model and token ids.

As in ``test_dpo_oracle.py``: both sides fp32 on the CPU, a LoRA adapter created with ``init_lora_weights=False``
(B ≠ 0, so the adapter changes the numbers and its gradients are not trivially shaped). TRL gets the
demonstrations as conversational prompt-completion rows, so it trains on the answer tokens only
(``completion_only_loss``, its default for such data); its loss is the sum of the answer tokens' NLL over their
number in the batch. Ours: :func:`~desktop_dpo.core.dpo.sft_phase.sft_nll` on the batch the supervised phase
builds (both layouts). Compared: the token ids and answer mask, the loss, and the LoRA gradients. Tolerance 1e-4.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from desktop_dpo.core.dpo.batches import collate, collate_for, collate_shared
from desktop_dpo.core.dpo.sft_phase import sft_nll, tokenize_demonstrations
from desktop_dpo.core.dpo.tokenizing import resolve_chat_template
from tests.core.test_dpo_oracle import (  # noqa: F401  (model_dir: fixture)
    PAIRS,
    TOL,
    cpu_trainer_args,
    lora_grads,
    model_dir,
    peft_trainer,
    trl_numbers,
)

torch.set_num_threads(1)

DEMOS = PAIRS  # each pair's chosen answer as a demonstration (our tokenizer drops the rejected side)
MAX_DIFFERENCE: dict[str, float] = {}


def trl_sft_trainer(folder: Path, output_dir: Path, rows: list[dict]):
    """TRL's SFTTrainer on a fresh copy of the tiny model, fp32 on the CPU, with a perturbed LoRA adapter."""
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(0)
    return peft_trainer(SFTTrainer, folder, SFTConfig(**cpu_trainer_args(output_dir, len(rows))), rows)


def test_sft_loss_and_gradients_equal_trl_sft_trainer(model_dir, tmp_path):  # noqa: F811
    rows = [{"prompt": p.messages, "completion": [{"role": "assistant", "content": p.chosen}]} for p in DEMOS]
    trainer = trl_sft_trainer(model_dir, tmp_path, rows)
    tokenizer, model = trainer.processing_class, trainer.model
    trl_rows = [trainer.train_dataset[i] for i in range(len(DEMOS))]
    ours = tokenize_demonstrations(
        tokenizer,
        DEMOS,
        chat_template=resolve_chat_template(tokenizer),
        max_length=256,
        max_prompt_length=128,
    )
    # 1. Same token ids, and the answer tokens are exactly those TRL trains on.
    for mine, theirs in zip(ours, trl_rows, strict=True):
        assert list(mine.prompt_ids) + list(mine.chosen_ids) == theirs["input_ids"]
        trained = [t for t, label in zip(theirs["input_ids"], theirs["labels"], strict=True) if label != -100]
        assert trained == list(mine.chosen_ids)
        assert mine.rejected_ids == ()

    # 2. Same loss and LoRA gradients, for each demonstration alone and for the batch, in both layouts.
    assert "label_seq" in collate_for(model, ours, pad_id=tokenizer.pad_token_id)
    for trl_batch, batch_demos in [([r], [d]) for r, d in zip(trl_rows, ours, strict=True)] + [
        (trl_rows, ours)
    ]:
        theirs = trl_numbers(trainer, trl_batch, None)["loss"]
        trl_grads = lora_grads(model)
        for layout in (collate, collate_shared):
            model.zero_grad()
            nll, tokens = sft_nll(model, layout(batch_demos, pad_id=tokenizer.pad_token_id))
            loss = nll.sum() / tokens.sum()
            loss.backward()
            difference = abs(loss.item() - theirs)
            grads = lora_grads(model)
            grad_difference = max((grads[n] - trl_grads[n]).abs().max().item() for n in grads)
            MAX_DIFFERENCE["loss"] = max(MAX_DIFFERENCE.get("loss", 0.0), difference)
            MAX_DIFFERENCE["grad"] = max(MAX_DIFFERENCE.get("grad", 0.0), grad_difference)
            assert difference < TOL, (layout.__name__, loss.item(), theirs)
            for name, grad in grads.items():
                torch.testing.assert_close(grad, trl_grads[name], atol=TOL, rtol=TOL, msg=name)
    print(
        f"SFT oracle max difference: loss {MAX_DIFFERENCE['loss']:.2e}, LoRA gradient {MAX_DIFFERENCE['grad']:.2e}"
    )
    # The comparison means something: a real NLL (not 0) with the perturbed adapter.
    assert math.isfinite(theirs) and theirs > 1.0
