"""A pair judged on a later turn of a conversation (Collect's Continue, or a chat message sent to Collect)
trains with the whole conversation as its prompt: every earlier turn, in order, and the answer chosen on
each earlier turn as the assistant's message there."""

from __future__ import annotations

from desktop_dpo.core.dpo.data import pairs_from_comparisons
from desktop_dpo.core.dpo.tokenizing import render_prompt_text, tokenize_pair
from tests.core.test_dpo_data import CharTokenizer

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "How do I brew green tea?"},
    {"role": "assistant", "content": "At 80 C for two minutes."},
    {"role": "user", "content": "And how often can I re-steep it?"},
    {"role": "assistant", "content": "Twice, a little longer each time."},
    {"role": "user", "content": "Milk or sugar?"},
]


def test_a_third_turn_pair_trains_on_the_whole_conversation(memory_store):
    comparison_id = memory_store.record_pair(
        messages=CONVERSATION, text_a=" Neither.", text_b=" Lots of both.", verdict="a"
    )
    (pair,) = pairs_from_comparisons(memory_store.comparison_views())
    assert pair.comparison_id == comparison_id
    assert pair.messages == CONVERSATION
    assert (pair.chosen, pair.rejected) == (" Neither.", " Lots of both.")

    tok = CharTokenizer()
    tokenized = tokenize_pair(tok, pair, chat_template=None, max_length=512, max_prompt_length=400)
    prompt = tok.decode(tokenized.prompt_ids)
    assert prompt == "<s>" + render_prompt_text(CONVERSATION, tok, None)  # as the sampler saw it
    positions = [prompt.index(m["content"]) for m in CONVERSATION]
    assert positions == sorted(positions), "every turn is in the prompt, in order"
    assert prompt.index("Twice, a little longer") < prompt.rindex(
        "Assistant:"
    )  # the earlier answer is history
    assert not tokenized.prompt_truncated and not tokenized.truncated
    assert tok.decode(tokenized.chosen_ids) == " Neither.\n</s>"
    assert tok.decode(tokenized.rejected_ids) == " Lots of both.\n</s>"
