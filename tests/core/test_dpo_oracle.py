"""Oracle: our DPO numbers equal TRL's ``DPOTrainer`` on the same tiny model, token ids and settings.

Both sides run in fp32 on the CPU: TRL with ``bf16=False``, no gradient checkpointing, ``use_cpu=True``,
no reporting. The LoRA adapter is created with ``init_lora_weights=False`` (B ≠ 0): with a fresh adapter
the policy equals the reference, the loss is ln 2 and the rewards 0 whatever the code does, which would
make the comparison meaningless. The reference is the same model with the adapter disabled, on both sides.

What is compared, per pair and for the whole batch: the token ids TRL trains on, the padded batch, the
policy log-probs, the loss, the rewards and the gradient reaching the LoRA weights. Tolerance 1e-4.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch

from desktop_dpo.core.dpo.batches import collate, collate_for, collate_shared, response_lengths
from desktop_dpo.core.dpo.data import PreferencePair
from desktop_dpo.core.dpo.logps import sequence_logps
from desktop_dpo.core.dpo.loss import dpo_metrics, preference_loss, with_sft_term
from desktop_dpo.core.dpo.tokenizing import (
    render_prompt_text,
    render_response_text,
    resolve_chat_template,
    tokenize_pair,
)

torch.set_num_threads(1)

TOL = 1e-4
BETA = 0.1
# A chat template whose assistant turn is exactly "generation prompt + content + EOS", the property that makes
# "rendered prompt + response + EOS" (ours) and "whole conversation through the template" (TRL) the same text.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}User: {{ message['content'] }}\n"
    "{% elif message['role'] == 'assistant' %}Assistant:{{ message['content'] }}{{ eos_token }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)
PAIRS = [
    PreferencePair(1, 1, [{"role": "user", "content": "What is the capital of France?"}],
                   " Paris is the capital of France.", " The cat sat on the mat."),
    PreferencePair(2, 2, [{"role": "user", "content": "hello there"}],
                   " hi, how can I help?", " Two plus two is four, said the quick brown fox."),
    PreferencePair(3, 3, [{"role": "user", "content": "Two plus two?"},
                          {"role": "assistant", "content": " four"},
                          {"role": "user", "content": "And the moon?"}],
                   " The moon looked at the cat.", " Paris."),
]  # fmt: skip
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "User: hello there\nAssistant: hi, how can I help?",
    "A cat sat on the mat and looked at the moon.",
    "Paris is the capital of France. Two plus two is four.",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny Llama (random weights, built from a config) with a SentencePiece tokenizer trained here."""
    import sentencepiece as spm
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer

    folder = tmp_path_factory.mktemp("tiny_llama")
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 20), model_writer=proto, vocab_size=400, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        num_threads=1, minloglevel=2,
    )  # fmt: skip
    (folder / "tokenizer.model").write_bytes(proto.getvalue())
    tokenizer = LlamaTokenizer.from_pretrained(folder)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def perturbed_lora():
    """The oracles' LoRA adapter: rank 4 on attention and up_proj, initialised with B != 0, so the policy
    already differs from where it started (a zero B would hide a wrong reference or a wrong gradient)."""
    from peft import LoraConfig

    return LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"],
        init_lora_weights=False,
    )  # fmt: skip


def cpu_trainer_args(output_dir: Path, batch: int, seed: int = 0) -> dict:
    """What every TRL oracle trainer is given: fp32 on the CPU, one batch of ``batch`` rows, nothing saved or
    reported, no truncation (TRL's default would cut at 1024 tokens)."""
    return dict(
        output_dir=str(output_dir), per_device_train_batch_size=batch, bf16=False, fp16=False,
        gradient_checkpointing=False, use_cpu=True, report_to="none", seed=seed, dataloader_num_workers=0,
        save_strategy="no", dataset_num_proc=None, max_length=None,
    )  # fmt: skip


def peft_trainer(trainer_class, model_dir: Path, args, rows: list[dict], pad_with_eos: bool = False):
    """TRL's ``trainer_class`` with ``args`` on ``rows``, on a fresh copy of the tiny model in ``model_dir``, fp32
    on the CPU, with the perturbed LoRA adapter (``pad_with_eos``: the tokenizer pads with its end token, as
    DPOTrainer does; the ORPO and CPO collators need one)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if pad_with_eos:
        tokenizer.pad_token = tokenizer.eos_token
    return trainer_class(
        model=AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=perturbed_lora(),
    )


def trl_trainer(
    model_dir: Path, output_dir: Path, loss_type: str | list[str], dataset_rows: list[dict], **config: object
):
    """TRL's DPOTrainer (:func:`peft_trainer`). No truncation unless ``config`` sets ``max_length`` (TRL's
    default would cut at 1024 tokens)."""
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(
        beta=BETA, loss_type=loss_type, **{**cpu_trainer_args(output_dir, len(dataset_rows)), **config}
    )
    return peft_trainer(DPOTrainer, model_dir, args, dataset_rows)


def trl_numbers(trainer, rows: list[dict], metrics: str | None = "_metrics") -> dict[str, float]:
    """Loss and logged metrics (in the trainer's attribute ``metrics``; None: the loss only) of one TRL
    forward/backward on ``rows`` (already tokenised by TRL); the LoRA gradients stay for ``lora_grads``."""
    trainer.model.train()
    trainer.model.zero_grad()
    logged = getattr(trainer, metrics)["train"] if metrics else {}
    logged.clear()
    loss = trainer.compute_loss(trainer.model, trainer.data_collator(rows))
    loss.backward()
    numbers = {key: values[-1] for key, values in logged.items()}
    numbers["loss"] = loss.item()
    return numbers


def our_numbers(model, batch: dict[str, torch.Tensor], loss_type: str, ipo_lengths: bool) -> dict[str, float]:
    """The same quantities computed with our data and loss code; reference = adapter off."""
    model.zero_grad()
    with torch.no_grad(), model.disable_adapter():
        reference = sequence_logps(model, batch, average=loss_type == "ipo" and not ipo_lengths)
    policy = sequence_logps(model, batch, average=loss_type == "ipo" and not ipo_lengths)
    extra = {}
    if loss_type == "ipo" and ipo_lengths:
        extra = dict(zip(("chosen_lengths", "rejected_lengths"), response_lengths(batch), strict=True))
    out = preference_loss(*policy, *reference, beta=BETA, loss_type=loss_type, **extra)
    loss = out.losses.mean()
    loss.backward()
    numbers = dpo_metrics(out, policy_chosen_logps=policy[0], policy_rejected_logps=policy[1])
    numbers["loss"] = loss.item()
    return numbers


def lora_grads(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if "lora_" in name}


def conversational_rows(pairs: list[PreferencePair]) -> list[dict]:
    return [
        {
            "prompt": p.messages,
            "chosen": [{"role": "assistant", "content": p.chosen}],
            "rejected": [{"role": "assistant", "content": p.rejected}],
        }
        for p in pairs
    ]


@pytest.mark.parametrize(("loss_type", "ipo_lengths"), [("sigmoid", False), ("ipo", True), ("ipo", False)])
def test_loss_logps_rewards_and_gradients_equal_trl(model_dir, tmp_path, loss_type, ipo_lengths):
    trainer = trl_trainer(model_dir, tmp_path, loss_type, conversational_rows(PAIRS))
    tokenizer, model = trainer.processing_class, trainer.model
    trl_rows = [trainer.train_dataset[i] for i in range(len(PAIRS))]

    # 1. Same token ids: our rendering + tokenisation gives exactly what TRL trains on.
    ours = [
        tokenize_pair(
            tokenizer,
            p,
            chat_template=resolve_chat_template(tokenizer),
            max_length=256,
            max_prompt_length=128,
        )
        for p in PAIRS
    ]
    for mine, theirs in zip(ours, trl_rows, strict=True):
        assert list(mine.prompt_ids) == theirs["prompt_ids"]
        assert list(mine.chosen_ids) == theirs["chosen_ids"]
        assert list(mine.rejected_ids) == theirs["rejected_ids"]

    # 2. Same padded batch: our loss_mask is TRL's completion_mask.
    batch = collate(ours, pad_id=tokenizer.pad_token_id)
    trl_batch = trainer.data_collator(trl_rows)
    assert torch.equal(batch["input_ids"], trl_batch["input_ids"])
    assert torch.equal(batch["attention_mask"], trl_batch["attention_mask"])
    assert torch.equal(batch["loss_mask"], trl_batch["completion_mask"])

    # 3. Same numbers, for each pair alone and for the whole batch, in both our layouts: padded rows
    #    (TRL's) and each prompt once (what training uses where the model allows it, as this one does).
    assert "label_seq" in collate_for(model, ours, pad_id=tokenizer.pad_token_id)
    for rows, pairs in [([r], [p]) for r, p in zip(trl_rows, ours, strict=True)] + [(trl_rows, ours)]:
        theirs = trl_numbers(trainer, rows)
        trl_grads = lora_grads(model)
        for layout in (collate, collate_shared):
            mine = our_numbers(model, layout(pairs, pad_id=tokenizer.pad_token_id), loss_type, ipo_lengths)
            keys = ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"]
            if not (
                loss_type == "ipo" and not ipo_lengths
            ):  # fed averages, our IPO reports per-token rewards
                keys += ["logps/chosen", "logps/rejected"]
            else:
                keys = ["loss"]
            deltas = {key: abs(mine[key] - theirs[key]) for key in keys}
            assert max(deltas.values()) < TOL, (layout.__name__, deltas, mine, theirs)
            for name, grad in lora_grads(model).items():
                torch.testing.assert_close(grad, trl_grads[name], atol=TOL, rtol=TOL, msg=name)

    # The comparison means something: the adapter moved the policy away from the reference.
    if loss_type == "sigmoid":
        assert abs(theirs["loss"] - math.log(2)) > 1e-3
        assert abs(theirs["rewards/margins"]) > 1e-3


def test_default_layout_equals_trl_on_plain_text(model_dir, tmp_path):
    """A model without a chat template: we render the User:/Assistant: layout; TRL gets that text as a plain
    prompt and the responses as that layout writes them (TRL's "standard" format, to which it appends the EOS
    text). Same ids, same loss. An empty or whitespace-only answer ends its turn as every answer does, with the
    layout's newline and EOS: it teaches the model to stop at once, with the tokens it stops with."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = None
    pairs = [
        *PAIRS,
        PreferencePair(4, 4, [{"role": "user", "content": "Say nothing."}], "", " The cat sat on the mat."),
        PreferencePair(5, 5, [{"role": "user", "content": "Two plus two?"}], "Four.", "   \n"),
    ]
    rows = [
        {
            "prompt": render_prompt_text(p.messages, tokenizer, None),
            "chosen": render_response_text(p.messages, p.chosen, tokenizer, None),
            "rejected": render_response_text(p.messages, p.rejected, tokenizer, None),
        }
        for p in pairs
    ]
    trainer = trl_trainer(model_dir, tmp_path, "sigmoid", rows)
    trainer.processing_class.chat_template = None
    ours = [
        tokenize_pair(tokenizer, p, chat_template=None, max_length=256, max_prompt_length=128) for p in pairs
    ]
    trl_rows = [trainer.train_dataset[i] for i in range(len(pairs))]
    for mine, theirs in zip(ours, trl_rows, strict=True):
        assert (list(mine.prompt_ids), list(mine.chosen_ids), list(mine.rejected_ids)) == (
            theirs["prompt_ids"],
            theirs["chosen_ids"],
            theirs["rejected_ids"],
        )
    # The empty and the whitespace-only answer: the layout's " " then its turn end, the newline and EOS that
    # end " Paris is the capital of France." too (not EOS alone, a token a base model never writes there).
    turn_end = ours[0].chosen_ids[-2:]
    assert tokenizer.convert_ids_to_tokens(list(turn_end)) == ["<0x0A>", tokenizer.eos_token]
    for empty in (ours[3].chosen_ids, ours[4].rejected_ids):
        assert empty[-2:] == turn_end and len(empty) == 3, tokenizer.convert_ids_to_tokens(list(empty))
    theirs = trl_numbers(trainer, trl_rows)
    mine = our_numbers(
        trainer.model, collate(ours, pad_id=trainer.processing_class.pad_token_id), "sigmoid", False
    )
    assert abs(mine["loss"] - theirs["loss"]) < TOL
    assert abs(mine["rewards/margins"] - theirs["rewards/margins"]) < TOL


def test_the_sft_term_equals_trl_sigmoid_plus_sft(model_dir, tmp_path):
    """DPO plus an SFT term on the chosen answer (RPO, ``TrainConfig.sft_weight``) is TRL's
    ``loss_type=["sigmoid", "sft"]`` with ``loss_weights=[1, w]``: same loss and LoRA gradients for each
    pair (TRL averages the SFT term over the batch's tokens, we over each answer's, so one pair at a time)."""
    weight = 0.7
    trainer = trl_trainer(
        model_dir, tmp_path, ["sigmoid", "sft"], conversational_rows(PAIRS), loss_weights=[1.0, weight]
    )
    tokenizer, model = trainer.processing_class, trainer.model
    template = resolve_chat_template(tokenizer)
    for p, row in zip(PAIRS, (trainer.train_dataset[i] for i in range(len(PAIRS))), strict=True):
        theirs = trl_numbers(trainer, [row])
        trl_grads = lora_grads(model)
        mine = tokenize_pair(tokenizer, p, chat_template=template, max_length=256, max_prompt_length=128)
        batch = collate_shared([mine], pad_id=tokenizer.pad_token_id)
        model.zero_grad()
        with torch.no_grad(), model.disable_adapter():
            reference = sequence_logps(model, batch)
        policy = sequence_logps(model, batch)
        dpo = preference_loss(*policy, *reference, beta=BETA)
        chosen_lengths, _ = response_lengths(batch)
        out = with_sft_term(dpo, policy[0], chosen_lengths, weight)
        out.losses.mean().backward()
        # The term is really there: it adds w times the chosen answer's per-token NLL.
        nll = (-policy[0] / chosen_lengths).item()
        assert out.losses.item() == pytest.approx(dpo.losses.item() + weight * nll, abs=1e-6)
        assert nll > 0.1
        assert abs(out.losses.item() - theirs["loss"]) < TOL
        for name, grad in lora_grads(model).items():
            torch.testing.assert_close(grad, trl_grads[name], atol=TOL, rtol=TOL, msg=name)
