"""From judged comparisons to batches: which pairs a person's picks make, how prompts are split, that
truncation is never silent, that only response tokens are scored, and when a cached reference is reused."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from desktop_dpo.core.dpo.batches import batch_tokens, collate, collate_for, collate_shared, response_lengths
from desktop_dpo.core.dpo.data import (
    PreferencePair,
    pairs_from_comparisons,
    reference_cache_key,
    split_by_prompt,
)
from desktop_dpo.core.dpo.logps import head_token_logps, selected_token_logps, sequence_logps
from desktop_dpo.core.dpo.tokenizing import TokenizedPair, render_prompt_text, tokenize_pair, tokenize_pairs

torch.set_num_threads(1)

BOS, EOS = 1, 2


class CharTokenizer:
    """One token per character (id = code point + 3); ``<s>`` and ``</s>`` written in text become
    BOS (1) and EOS (2). Token counts equal character counts, so every length below can be checked
    by counting characters."""

    bos_token, eos_token = "<s>", "</s>"
    bos_token_id, eos_token_id = BOS, EOS
    chat_template = None

    def __init__(self, adds_bos: bool = True):
        self.adds_bos = adds_bos

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        ids, i = [], 0
        while i < len(text):
            for special, special_id in (("<s>", BOS), ("</s>", EOS)):
                if text.startswith(special, i):
                    ids.append(special_id)
                    i += len(special)
                    break
            else:
                ids.append(ord(text[i]) + 3)
                i += 1
        return {"input_ids": ([BOS] if add_special_tokens and self.adds_bos else []) + ids}

    @staticmethod
    def decode(ids) -> str:
        return "".join({BOS: "<s>", EOS: "</s>"}.get(i, chr(i - 3) if i > 2 else "") for i in ids)


def pair(
    messages=None, chosen="Paris.", rejected="Lyon, I think.", comparison_id=1, prompt_id=1
) -> PreferencePair:
    messages = messages or [{"role": "user", "content": "Capital of France?"}]
    return PreferencePair(comparison_id, prompt_id, messages, chosen, rejected)


# --------------------------------------------------------------------------------------------------
# verdicts and edits -> pairs
# --------------------------------------------------------------------------------------------------

PROMPT = [{"role": "user", "content": "Name a fruit."}]


def judged(store, verdict, *, edited_text=None, edited_side=None, prompt=PROMPT):
    return store.record_pair(
        messages=prompt,
        text_a="apple",
        text_b="brick",
        verdict=verdict,
        edited_text=edited_text,
        edited_side=edited_side,
    )


def as_tuples(pairs):
    return [(p.chosen, p.rejected, p.origin) for p in pairs]


def test_verdict_names_the_chosen_response(memory_store):
    a = judged(memory_store, "a")
    b = judged(memory_store, "b")
    pairs = pairs_from_comparisons(memory_store.comparison_views())
    assert as_tuples(pairs) == [("apple", "brick", "verdict"), ("brick", "apple", "verdict")]
    assert [p.comparison_id for p in pairs] == [a, b]
    assert pairs[0].messages == PROMPT
    assert pairs[0].prompt_id == memory_store.get_comparison(a).prompt_id


@pytest.mark.parametrize("verdict", ["tie", "both_bad", "skip"])
def test_no_preference_gives_no_pair(memory_store, verdict):
    judged(memory_store, verdict)
    assert pairs_from_comparisons(memory_store.comparison_views()) == []


def test_deleted_comparisons_are_left_out(memory_store):
    kept = judged(memory_store, "a")
    gone = judged(memory_store, "b")
    memory_store.set_comparisons_deleted([gone])
    pairs = pairs_from_comparisons(memory_store.comparison_views(include_deleted=True))
    assert [p.comparison_id for p in pairs] == [kept]


def test_edit_of_the_winner_beats_both_originals(memory_store):
    judged(memory_store, "a", edited_text="a ripe apple", edited_side="a")
    assert as_tuples(pairs_from_comparisons(memory_store.comparison_views())) == [
        ("apple", "brick", "verdict"),
        ("a ripe apple", "apple", "edit_vs_original"),
        ("a ripe apple", "brick", "edit_vs_other"),
    ]


def test_edit_of_the_loser_is_not_ranked_above_the_response_marked_better(memory_store):
    # The person preferred B, then rewrote A: the rewrite beats the old A, but whether it beats B is unknown.
    judged(memory_store, "b", edited_text="an apple", edited_side="a")
    assert as_tuples(pairs_from_comparisons(memory_store.comparison_views())) == [
        ("brick", "apple", "verdict"),
        ("an apple", "apple", "edit_vs_original"),
    ]


@pytest.mark.parametrize("verdict", ["tie", "both_bad", "skip"])
def test_edit_without_a_verdict_beats_both(memory_store, verdict):
    judged(memory_store, verdict, edited_text="banana", edited_side="b")
    assert as_tuples(pairs_from_comparisons(memory_store.comparison_views())) == [
        ("banana", "brick", "edit_vs_original"),
        ("banana", "apple", "edit_vs_other"),
    ]


def test_an_edit_that_changed_nothing_gives_no_pair_against_itself(memory_store):
    judged(memory_store, "tie", edited_text="apple\n", edited_side="a")
    assert as_tuples(pairs_from_comparisons(memory_store.comparison_views())) == [
        ("apple\n", "brick", "edit_vs_other")
    ]


# --------------------------------------------------------------------------------------------------
# split by prompt
# --------------------------------------------------------------------------------------------------


def test_split_never_puts_one_prompt_on_both_sides(memory_store):
    prompts = [[{"role": "user", "content": f"question {i}"}] for i in range(30)]
    for round_ in range(3):  # each prompt judged in three rounds, some with an edit (several pairs each)
        for i, prompt in enumerate(prompts):
            edit = {"edited_text": f"better {round_}", "edited_side": "a"} if i % 4 == 0 else {}
            judged(memory_store, "a", prompt=prompt, **edit)
    pairs = pairs_from_comparisons(memory_store.comparison_views())
    splits = split_by_prompt([p.prompt_id for p in pairs], heldout_fraction=0.2)
    sides: dict[int, set[str]] = {}
    for p in pairs:
        sides.setdefault(p.prompt_id, set()).add(splits[p.prompt_id])
    assert all(len(s) == 1 for s in sides.values())
    assert sum(split == "heldout" for split in splits.values()) == 6  # 20% of 30 prompts


def test_split_is_deterministic_and_ignores_input_order():
    ids = list(range(1, 101))
    first = split_by_prompt(ids, heldout_fraction=0.1, seed=3)
    assert split_by_prompt(list(reversed(ids)) + ids[:10], heldout_fraction=0.1, seed=3) == first
    assert sum(v == "heldout" for v in first.values()) == 10
    other_seed = split_by_prompt(ids, heldout_fraction=0.1, seed=4)
    assert {k for k, v in other_seed.items() if v == "heldout"} != {
        k for k, v in first.items() if v == "heldout"
    }


def test_existing_splits_are_kept_and_new_prompts_fill_the_quota():
    first = split_by_prompt(range(1, 21), heldout_fraction=0.1)
    # The person collected 20 more prompts; the first 20 keep their side, the new ones top up the held-out set.
    second = split_by_prompt(range(1, 41), heldout_fraction=0.1, existing=first)
    assert {k: second[k] for k in first} == first
    assert sum(v == "heldout" for v in second.values()) == 4
    # A split fixed earlier wins even when the hash would now place the prompt elsewhere.
    flipped = {k: ("train" if v == "heldout" else "heldout") for k, v in first.items()}
    assert {k: v for k, v in split_by_prompt(range(1, 21), existing=flipped).items()} == flipped


def test_a_single_prompt_is_always_trained_on():
    assert split_by_prompt([7], heldout_fraction=0.5) == {7: "train"}
    assert split_by_prompt([], heldout_fraction=0.1) == {}


def test_split_refuses_bad_settings():
    with pytest.raises(ValueError, match="heldout_fraction"):
        split_by_prompt([1, 2], heldout_fraction=1.0)
    with pytest.raises(ValueError, match="unknown split"):
        split_by_prompt([1, 2], existing={1: "test"})


# --------------------------------------------------------------------------------------------------
# rendering, tokenising, truncation
# --------------------------------------------------------------------------------------------------


def test_prompt_is_rendered_as_for_sampling_and_responses_end_with_eos():
    tok = CharTokenizer()
    p = pair()
    tp = tokenize_pair(tok, p, chat_template=None, max_length=256, max_prompt_length=128)
    rendered = render_prompt_text(p.messages, tok, None)  # the text the sampler sends to llama.cpp
    assert tok.decode(tp.prompt_ids) == "<s>" + rendered
    # The default layout writes "Assistant: <text>\n" and its generation prompt ends at the colon; the
    # newline is how the model ends its turn there, so it stays before the EOS.
    assert tok.decode(tp.chosen_ids) == " Paris.\n</s>"
    assert tok.decode(tp.rejected_ids) == " Lyon, I think.\n</s>"
    assert not tp.truncated and not tp.prompt_truncated


def test_a_typed_edit_lines_up_with_a_sampled_answer():
    # The sampler stores what the model wrote after "Assistant:" (" Paris."); a person types "Paris.".
    tok = CharTokenizer()
    sampled = tokenize_pair(
        tok, pair(chosen=" Paris."), chat_template=None, max_length=256, max_prompt_length=128
    )
    typed = tokenize_pair(
        tok, pair(chosen="Paris.\n"), chat_template=None, max_length=256, max_prompt_length=128
    )
    assert typed.chosen_ids == sampled.chosen_ids
    assert tok.decode(typed.chosen_ids) == " Paris.\n</s>"


def test_bos_is_never_doubled_when_the_template_writes_it():
    tok = CharTokenizer()
    # (an assistant turn starts with ">", the generation prompt, as in real templates)
    template = (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'assistant' %}>{% endif %}[{{ m['content'] }}]"
        "{% endfor %}{% if add_generation_prompt %}>{% endif %}"
    )
    tp = tokenize_pair(tok, pair(), chat_template=template, max_length=256, max_prompt_length=128)
    assert tok.decode(tp.prompt_ids) == "<s>[Capital of France?]>"
    # A tokenizer that adds no BOS of its own gets none from us either.
    tp = tokenize_pair(
        CharTokenizer(adds_bos=False), pair(), chat_template=None, max_length=256, max_prompt_length=128
    )
    assert tp.prompt_ids[0] != BOS


def test_a_response_that_does_not_fit_is_cut_but_flagged_and_counted(caplog):
    tok = CharTokenizer()
    long = pair(chosen="x" * 200)
    short = pair(comparison_id=2)
    prompt_len = len(
        tokenize_pair(tok, short, chat_template=None, max_length=256, max_prompt_length=128).prompt_ids
    )
    with caplog.at_level(logging.WARNING, logger="desktop_dpo.core.dpo.tokenizing"):
        result = tokenize_pairs(
            tok, [long, short], chat_template=None, max_length=prompt_len + 50, max_prompt_length=prompt_len
        )
    cut, whole = result.pairs
    assert cut.truncated and not whole.truncated
    assert len(cut.prompt_ids) + len(cut.chosen_ids) == prompt_len + 50  # filled up to max_length, no further
    assert tok.decode(cut.rejected_ids) == " Lyon, I think.\n</s>"  # the other response is untouched
    assert result.truncated == 1
    assert "1 of 2 pairs were truncated" in result.truncation_message()
    assert "1 of 2 pairs were truncated" in caplog.text


def test_older_turns_are_dropped_before_any_response_is_cut():
    tok = CharTokenizer()
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "A" * 60},
        {"role": "assistant", "content": "B" * 60},
        {"role": "user", "content": "And the capital of Italy?"},
    ]
    tp = tokenize_pair(
        tok, pair(conversation, chosen="Rome."), chat_template=None, max_length=120, max_prompt_length=80
    )
    prompt = tok.decode(tp.prompt_ids)
    assert "And the capital of Italy?" in prompt and "Be brief." in prompt
    assert "AAAA" not in prompt and "BBBB" not in prompt
    assert tp.prompt_truncated and not tp.truncated
    assert tok.decode(tp.chosen_ids) == " Rome.\n</s>"


def test_a_last_turn_longer_than_the_prompt_budget_keeps_its_end_and_bos():
    tok = CharTokenizer()
    question = "Q" * 100 + " so what is the answer?"
    tp = tokenize_pair(
        tok,
        pair([{"role": "user", "content": question}]),
        chat_template=None,
        max_length=64,
        max_prompt_length=40,
    )
    rendered = render_prompt_text([{"role": "user", "content": question}], tok, None)
    assert len(tp.prompt_ids) == 40 and tp.prompt_ids[0] == BOS
    assert tok.decode(tp.prompt_ids[1:]) == rendered[-39:]  # ends with the generation prompt, as sampled
    assert tp.prompt_truncated and not tp.truncated


def test_lengths_that_leave_no_room_for_a_response_are_refused():
    with pytest.raises(ValueError, match="max_prompt_length"):
        tokenize_pair(CharTokenizer(), pair(), chat_template=None, max_length=64, max_prompt_length=64)


# --------------------------------------------------------------------------------------------------
# collate and log-probabilities
# --------------------------------------------------------------------------------------------------


def tp_(prompt, chosen, rejected) -> TokenizedPair:
    return TokenizedPair(0, 0, tuple(prompt), tuple(chosen), tuple(rejected))


def test_loss_mask_covers_response_tokens_only():
    pairs = [tp_([1, 10, 11], [20, 2], [30, 31, 32, 2]), tp_([1, 12], [21, 22, 23, 24, 2], [33, 2])]
    batch = collate(pairs, pad_id=0)
    assert batch["input_ids"].tolist() == [
        [1, 10, 11, 20, 2, 0, 0],  # chosen of pair 0
        [1, 12, 21, 22, 23, 24, 2],  # chosen of pair 1
        [1, 10, 11, 30, 31, 32, 2],  # rejected of pair 0
        [1, 12, 33, 2, 0, 0, 0],  # rejected of pair 1
    ]
    assert batch["attention_mask"].tolist() == [
        [1, 1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 0, 0, 0],
    ]
    assert batch["loss_mask"].tolist() == [
        [0, 0, 0, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 1, 1],
        [0, 0, 0, 1, 1, 1, 1],
        [0, 0, 1, 1, 0, 0, 0],
    ]
    chosen_lengths, rejected_lengths = response_lengths(batch)
    assert chosen_lengths.tolist() == [2, 5] and rejected_lengths.tolist() == [4, 2]


@pytest.fixture(scope="module")
def tiny_lm():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=160, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=64, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=0,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def naive_logps(model, batch) -> torch.Tensor:
    """The textbook computation: full log-softmax, then sum log p(token_t | tokens_<t) over response tokens."""
    logprobs = torch.log_softmax(
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, -1
    )
    totals = []
    for row in range(batch["input_ids"].shape[0]):
        positions = batch["loss_mask"][row].nonzero().flatten().tolist()
        totals.append(sum(logprobs[row, t - 1, batch["input_ids"][row, t]] for t in positions))
    return torch.stack(totals)


PAIRS = [tp_([1, 40, 41, 42], [50, 51, 2], [60, 2]), tp_([1, 43], [52, 53, 54, 55, 56, 2], [61, 62, 63, 2])]


def test_sequence_logps_match_the_textbook_sum(tiny_lm):
    batch = collate(PAIRS, pad_id=0)
    with torch.no_grad():
        chosen, rejected = sequence_logps(tiny_lm, batch)
        expected = naive_logps(tiny_lm, batch)
        torch.testing.assert_close(torch.cat([chosen, rejected]), expected, atol=1e-5, rtol=1e-5)
        chosen_avg, rejected_avg = sequence_logps(tiny_lm, batch, average=True)
    torch.testing.assert_close(chosen_avg, chosen / torch.tensor([3.0, 6.0]))
    torch.testing.assert_close(rejected_avg, rejected / torch.tensor([2.0, 4.0]))
    assert chosen.dtype == torch.float32 and chosen.shape == (2,)


def test_padding_does_not_change_a_pairs_log_probs(tiny_lm):
    with torch.no_grad():
        alone = sequence_logps(tiny_lm, collate(PAIRS[:1], pad_id=0))
        batched = sequence_logps(tiny_lm, collate(PAIRS, pad_id=0))
    torch.testing.assert_close(alone[0], batched[0][:1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone[1], batched[1][:1], atol=1e-5, rtol=1e-5)


class PlainForward(torch.nn.Module):
    """A model without ``logits_to_keep`` and without a decoder to reach: only input ids and a mask."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask, use_cache=False):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


def test_a_model_without_logits_to_keep_gets_the_same_values(tiny_lm):
    batch = collate(PAIRS, pad_id=0)
    with torch.no_grad():
        torch.testing.assert_close(
            sequence_logps(PlainForward(tiny_lm), batch), sequence_logps(tiny_lm, batch)
        )


def test_gradients_flow_from_the_log_probs_to_the_weights(tiny_lm):
    tiny_lm.zero_grad()
    chosen, rejected = sequence_logps(tiny_lm, collate(PAIRS, pad_id=0))
    (chosen - rejected).sum().backward()
    assert tiny_lm.lm_head.weight.grad.abs().sum() > 0
    tiny_lm.zero_grad()


def test_half_precision_logits_are_scored_in_fp32_with_the_right_gradient():
    torch.manual_seed(1)
    logits = (torch.randn(7, 300) * 4).bfloat16().requires_grad_()
    labels = torch.randint(0, 300, (7,))
    ours = selected_token_logps(logits, labels)
    reference = torch.log_softmax(logits.float(), -1).gather(-1, labels[:, None]).squeeze(-1)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, reference)
    (grad_ours,) = torch.autograd.grad(ours.sum(), logits)
    (grad_reference,) = torch.autograd.grad(reference.sum(), logits)
    torch.testing.assert_close(grad_ours, grad_reference)


# --------------------------------------------------------------------------------------------------
# the fast paths: each prompt once (shared layout) and the fused LM head
# --------------------------------------------------------------------------------------------------


def test_shared_layout_puts_each_prompt_once_and_hides_the_chosen_response_from_the_rejected_one():
    pairs = [tp_([1, 10, 11], [20, 2], [30, 31, 2]), tp_([1, 12], [21, 2], [33, 2])]
    batch = collate_shared(pairs, pad_id=0)
    # The longer pair fills its row; the shorter one gets its own row (it does not fit beside it).
    assert batch["input_ids"].tolist() == [[1, 10, 11, 20, 2, 30, 31, 2], [1, 12, 21, 2, 33, 2, 0, 0]]
    # The rejected response continues from the end of the prompt, as in its own sequence.
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 3, 4, 3, 4, 5]
    mask = batch["attention_mask"][0, 0]
    assert mask[5].tolist() == [True, True, True, False, False, True, False, False]  # 30 sees the prompt
    assert mask[3].tolist() == [True, True, True, True, False, False, False, False]  # 20: causal
    assert batch["attention_mask"][1, 0, 7].tolist() == [False] * 7 + [True]  # padding sees itself only
    # Every response token is scored once, predicted by the token before it in its own sequence.
    assert sorted(batch["labels"].tolist()) == sorted([20, 2, 30, 31, 2, 21, 2, 33, 2])
    chosen_lengths, rejected_lengths = response_lengths(batch)
    assert chosen_lengths.tolist() == [2, 2] and rejected_lengths.tolist() == [3, 2]
    assert batch_tokens(batch) == batch_tokens(collate(pairs, pad_id=0)) == 2 * 3 + 2 + 3 + 2 * 2 + 2 + 2


def test_short_pairs_share_a_row_so_little_padding_is_left():
    pairs = [tp_([1, 40], [50, 51, 52, 53, 54, 55, 2], [60, 61, 62, 63, 2])] + [
        tp_([1, 41], [52, 2], [61, 2]) for _ in range(2)
    ]
    shared, padded = collate_shared(pairs, pad_id=0), collate(pairs, pad_id=0)
    assert shared["input_ids"].shape == (2, 14)  # the two short pairs (6 tokens each) share one row
    # 26 tokens in the pairs themselves: 2 padding positions left, against 22 in the padded layout.
    assert (shared["input_ids"].numel(), padded["input_ids"].numel()) == (28, 54)


@pytest.fixture()
def frozen_head_lm(tiny_lm):
    """The tiny LM with its LM head frozen (as under LoRA): the fused head applies; the rest trains."""
    import copy

    model = copy.deepcopy(tiny_lm).train()
    model.lm_head.weight.requires_grad_(False)
    return model


MIXED_PAIRS = [
    *PAIRS,
    tp_([1, 44, 45, 46, 47, 48], [57, 2], [64, 65, 66, 67, 68, 69, 70, 2]),
    tp_([1], [58, 59, 2], [71, 2]),
    tp_([1, 49], [3, 2], [72, 73, 74, 2]),
]


def _values_and_grads(model, batch, average=False):
    model.zero_grad()
    chosen, rejected = sequence_logps(model, batch, average=average)
    weights = torch.arange(1.0, 1.0 + chosen.shape[0])
    ((chosen * weights).sum() - (rejected * weights.flip(0)).sum()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return torch.cat([chosen, rejected]).detach(), grads


@pytest.mark.parametrize("average", [False, True])
def test_shared_layout_and_fused_head_give_the_textbook_log_probs_and_gradients(frozen_head_lm, average):
    model = frozen_head_lm
    textbook = torch.cat(sequence_logps_textbook(model, collate(MIXED_PAIRS, pad_id=0), average))
    model.zero_grad()
    (textbook * torch.cat([torch.arange(1.0, 6.0), -torch.arange(5.0, 0.0, -1.0)])).sum().backward()
    expected_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    assert "label_seq" in collate_for(model, MIXED_PAIRS, pad_id=0)  # this model takes the shared layout
    for batch in (collate_shared(MIXED_PAIRS, pad_id=0), collate(MIXED_PAIRS, pad_id=0)):
        values, grads = _values_and_grads(model, batch, average)
        torch.testing.assert_close(values, textbook.detach(), atol=1e-5, rtol=1e-5)
        assert grads.keys() == expected_grads.keys() and "lm_head.weight" not in grads
        for name, grad in grads.items():
            torch.testing.assert_close(grad, expected_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def sequence_logps_textbook(model, batch, average):
    """Full log-softmax over the model's own logits, summed (or averaged) over the response tokens."""
    logprobs = torch.log_softmax(
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, -1
    )
    totals = []
    for row in range(batch["input_ids"].shape[0]):
        positions = [t for t in batch["loss_mask"][row].nonzero().flatten().tolist() if t > 0]
        total = sum(logprobs[row, t - 1, batch["input_ids"][row, t]] for t in positions)
        totals.append(total / len(positions) if average else total)
    return torch.stack(totals).chunk(2)


def test_fused_head_equals_log_softmax_with_its_gradient():
    torch.manual_seed(2)
    head = torch.nn.Linear(8, 50, bias=True).requires_grad_(False)
    hidden = torch.randn(5, 8, requires_grad=True)
    rows = torch.tensor([0, 0, 1, 3, 4, 4, 2])  # a row may predict several tokens (the shared prompt end)
    labels = torch.tensor([3, 7, 49, 0, 10, 10, 5])
    ours = head_token_logps(hidden, head, rows, labels)
    expected = torch.log_softmax(head(hidden), -1)[rows, labels]
    torch.testing.assert_close(ours, expected)
    weights = torch.linspace(-1.0, 2.0, 7)
    (grad_ours,) = torch.autograd.grad((ours * weights).sum(), hidden)
    (grad_expected,) = torch.autograd.grad((expected * weights).sum(), hidden)
    torch.testing.assert_close(grad_ours, grad_expected)


def test_a_model_whose_head_trains_or_cannot_be_checked_keeps_the_padded_layout(tiny_lm):
    for model in (tiny_lm, PlainForward(tiny_lm)):  # head trains / no decoder to reach
        batch = collate_for(model, PAIRS, pad_id=0)
        assert "loss_mask" in batch and "label_seq" not in batch


# --------------------------------------------------------------------------------------------------
# reference cache key
# --------------------------------------------------------------------------------------------------


def test_cache_key_changes_with_each_component():
    base_pair = tp_([1, 5, 6], [7, 2], [8, 2])
    base = {"reference_id": "sha:base", "quantization": "nf4", "template_hash": "t1", "max_length": 512}
    key = reference_cache_key(base_pair, **base)
    assert key == reference_cache_key(tp_([1, 5, 6], [7, 2], [8, 2]), **base)  # same inputs, same key
    variants = [
        reference_cache_key(dataclasses.replace(base_pair, prompt_ids=(1, 5, 9)), **base),
        reference_cache_key(dataclasses.replace(base_pair, chosen_ids=(7, 7, 2)), **base),
        reference_cache_key(dataclasses.replace(base_pair, rejected_ids=(9, 2)), **base),
        reference_cache_key(tp_([1, 5, 6], [8, 2], [7, 2]), **base),  # chosen and rejected swapped
        reference_cache_key(base_pair, **{**base, "reference_id": "sha:other"}),
        reference_cache_key(base_pair, **{**base, "quantization": "bf16"}),
        reference_cache_key(base_pair, **{**base, "template_hash": "t2"}),
        reference_cache_key(base_pair, **{**base, "max_length": 1024}),
        reference_cache_key(base_pair, **base, reduction="mean"),
    ]
    assert len({key, *variants}) == 1 + len(variants)
    # Comparison and prompt ids are bookkeeping: the same tokens under another comparison reuse the value.
    assert reference_cache_key(dataclasses.replace(base_pair, comparison_id=99), **base) == key
