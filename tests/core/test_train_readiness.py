"""Whether Train can start, counted in what the chosen loss learns from (``core/dpo/train_readiness.py``): pairs for
DPO and the others, labelled answers for KTO (chat ratings included), with words that say what to add."""

from __future__ import annotations

from desktop_dpo.core.dpo.config import TrainConfig
from desktop_dpo.core.dpo.labels import LabelCounts
from desktop_dpo.core.dpo.runs import plan_run
from desktop_dpo.core.dpo.train_readiness import (
    MIN_KTO_EACH,
    MIN_KTO_EXAMPLES,
    LabelPlan,
    data_blocker,
    kto_blocker,
    label_plan_text,
    plan_labels,
)
from tests.core.test_reply_labels import add_model, chat
from tests.core.test_train import TOPICS, add_pairs, chosen_text, rejected_text

KTO = TrainConfig(loss_type="kto", heldout_fraction=0.1, seed=7)


def labels(good: int, bad: int, train: int | None = None) -> LabelPlan:
    total = good + bad
    counts = LabelCounts(desirable=good, undesirable=bad, both_bad_picks=0, rewrites=0, chat_replies=total)
    train = total - 1 if train is None else train
    return LabelPlan(
        counts=counts, prompts=total, heldout_prompts=total - train, heldout=total - train, train=train
    )


def rate(store, model_id: int, good: int, bad: int) -> None:
    """``good`` chat replies rated 👍 and ``bad`` rated 👎, each in a conversation of its own."""
    for i in range(good + bad):
        topic = TOPICS[i % len(TOPICS)]
        reply = chosen_text(topic) if i < good else rejected_text(topic)
        store.set_reply_label(chat(store, model_id, f"Tell me about {topic}, please ({i})?", reply), i < good)


def test_the_kto_minimum_needs_enough_answers_and_some_of_each_kind():
    assert (MIN_KTO_EXAMPLES, MIN_KTO_EACH) == (16, 3)  # the answers 8 pairs give; a few of each kind
    assert kto_blocker(labels(14, 6), "tiny") == ""
    assert kto_blocker(labels(13, 3), "tiny") == ""

    only_good = kto_blocker(labels(20, 0), "tiny")
    assert only_good.startswith(
        "KTO needs at least 16 answers marked good or bad, 3 or more of each; tiny has 20"
    )
    assert "(20 good, 0 bad)" in only_good
    assert (
        "Rate 3 more replies as bad (👎) in Chat, or pick the better answer of 3 more pairs in Collect"
        in only_good
    )
    assert "Rate 1 more reply as good (👍) in Chat, or pick the better answer of 1 more pair" in kto_blocker(
        labels(2, 16), "tiny"
    )

    few = kto_blocker(labels(6, 4), "tiny")  # both kinds, too few in all: 6 more, any kind
    assert "Rate 6 more replies in Chat, or pick the better answer of 3 more pairs" in few
    short_of_bad = kto_blocker(labels(10, 0), "tiny")  # too few, and none bad
    assert (
        "Rate 6 more replies (at least 3 👎) in Chat, or pick the better answer of 3 more pairs"
        in short_of_bad
    )
    nothing = kto_blocker(labels(0, 0, train=0), "tiny")
    assert (
        "Rate 16 more replies (at least 3 👍 and 3 👎) in Chat, or pick the better answer of 8 more pairs"
        in nothing
    )

    assert "Every labelled answer is held out" in kto_blocker(labels(10, 10, train=0), "tiny")


def test_a_kto_set_of_chat_ratings_alone_can_start_and_is_split_by_prompt(memory_store):
    model_id = add_model(memory_store)
    model = memory_store.get_model(model_id)
    rate(memory_store, model_id, good=14, bad=6)  # no pair at all

    plan = plan_run(memory_store, model_id, KTO)
    kto = plan_labels(memory_store, plan, KTO)

    assert plan.pairs == 0 and len(plan.reply_label_ids) == 20
    assert (kto.counts.desirable, kto.counts.undesirable, kto.counts.chat_replies) == (14, 6, 20)
    assert kto.prompts == 20 and kto.heldout_prompts == 2  # 10 % of the prompts, as training splits them
    assert kto.train + kto.heldout == 20 and kto.heldout == 2
    assert data_blocker(model.name, plan, kto) == ""
    assert label_plan_text(kto, model.name) == (
        "20 labelled answers (14 good, 6 bad) from 20 prompts: 18 to train on; 2 prompts (2 answers) held out "
        "to check that the model generalises."
    )
    # The pair losses still count pairs: the same ratings give DPO nothing.
    dpo = plan_run(memory_store, model_id, KTO.replace(loss_type="sigmoid"))
    assert data_blocker(model.name, dpo, None).startswith(
        "Train needs at least 8 usable pairs; m has 0 usable pairs"
    )


def test_a_prompt_keeps_its_split_and_pairs_count_as_labels_too(memory_store):
    model_id = add_model(memory_store)
    add_pairs(memory_store, TOPICS[:4])  # imported pairs: 4 good and 4 bad answers for every model
    rate(memory_store, model_id, good=5, bad=0)
    plan = plan_run(memory_store, model_id, KTO)
    first = plan_labels(memory_store, plan, KTO)
    assert (first.counts.desirable, first.counts.undesirable) == (9, 4)
    assert "Rate 3 more replies in Chat, or pick the better answer of 2 more pairs" in kto_blocker(first, "m")

    heldout = next(p.id for p in memory_store.list_prompts() if p.split is None)
    memory_store.set_prompt_splits({heldout: "heldout"})  # a split once fixed (by an earlier run) is kept
    again = plan_labels(memory_store, plan, KTO)
    assert again.heldout >= 1 and again.heldout_prompts == 1
