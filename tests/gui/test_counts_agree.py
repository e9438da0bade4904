"""Every screen counts the same pairs: Collect, Data, the status bar, Train's plan and the run as it starts.

A person judges comparisons; training learns from pairs, and a rewrite gives more than one. The headline
everywhere is the comparisons that can train ("usable pairs"); where training pairs differ, Train says both
in one phrase and why, and the run's split adds up to the training pairs.
"""

from __future__ import annotations

from desktop_dpo.core.dpo import events
from desktop_dpo.core.dpo.config import TrainConfig
from desktop_dpo.core.dpo.runs import plan_run
from desktop_dpo.core.models import register_model
from desktop_dpo.core.store import Store

WAIT_MS = 180_000  # the device detection imports torch; the machine is shared


def fill(store: Store) -> None:
    """10 plain picks, 2 rewrites (adding 2 pairs and 1 pair), a tie, a "both bad", a skip and a pick between
    two answers that are the same text: 12 usable pairs, 15 training pairs."""
    for index in range(12):
        edit = {}
        if index == 10:  # picked A and rewrote it: the rewrite over A and over B besides A over B
            edit = {"edited_text": "A rewrite, better than both.", "edited_side": "a"}
        elif index == 11:  # picked B and rewrote A: the rewrite over A besides B over A
            edit = {"edited_text": "A rewrite of the worse one.", "edited_side": "a"}
        store.record_pair(
            messages=[{"role": "user", "content": f"Question {index}?"}],
            text_a=f"Answer A{index}.",
            text_b=f"Answer B{index}.",
            verdict="b" if index in (3, 7, 11) else "a",
            **edit,
        )
    for index, verdict in enumerate(["tie", "both_bad", "skip"], start=12):
        store.record_pair(
            messages=[{"role": "user", "content": f"Question {index}?"}],
            text_a=f"Answer A{index}.",
            text_b=f"Answer B{index}.",
            verdict=verdict,
        )
    # Two samples that came out the same: nothing to learn, so not usable (the old count said it was).
    store.record_pair(
        messages=[{"role": "user", "content": "Same?"}], text_a="Same.", text_b="Same.", verdict="a"
    )


def test_every_screen_states_the_same_usable_count_and_train_explains_training_pairs(
    qtbot, make_window, gui_store, tiny_model_dir
):
    model = register_model(gui_store, tiny_model_dir, name="tiny")
    fill(gui_store)
    window = make_window()

    # The status bar, Collect and Data: 12 usable, whatever view is open.
    assert window.status_pairs.text() == "16 pairs collected · 12 usable for training"
    assert "12 usable pairs → 15 training pairs (2 rewrites add 3 pairs)" in window.status_pairs.toolTip()
    window.show_view("collect")
    collect = window.view("collect")
    assert collect.pairs_label.text() == "12 usable pairs"
    assert "12 usable pairs → 15 training pairs" in collect.pairs_label.toolTip()
    window.show_view("data")
    data = window.view("data")
    assert data.counts_text() == "16 comparisons · 12 usable for training"
    assert "12 usable pairs → 15 training pairs" in data.counts_label.toolTip()

    # Train: the same 12, the 15 training pairs they give, and why.
    window.show_view("train")
    train = window.view("train")
    qtbot.waitUntil(lambda: train.preset is not None, timeout=WAIT_MS)  # the detection job ends in the test
    config = TrainConfig(heldout_fraction=0.1, seed=0, device="cpu", quantization="none")
    train.set_settings(config)
    assert train.pairs_pill.text() == "12 usable pairs → 15 training pairs"
    tooltip = train.pairs_pill.toolTip()
    assert "12 usable pairs → 15 training pairs (2 rewrites add 3 pairs)" in tooltip
    assert "A rewrite adds your rewrite over the answer you rewrote" in tooltip  # how a rewrite adds pairs
    assert "Held-out pairs are chosen by prompt" in tooltip
    note = train.pairs_note.text()
    assert note.startswith("12 usable pairs → 15 training pairs (2 rewrites add 3 pairs), from 12 prompts: ")
    plan = plan_run(gui_store, model.id, config)  # what a run made now would take
    assert plan.heldout_prompts == 1  # 12 prompts, a tenth held out
    assert plan.train_pairs + plan.heldout_pairs == 15
    assert f": {plan.train_pairs} to train on; 1 prompt ({plan.heldout_pairs} pair" in note
    assert "Held-out pairs are chosen by prompt" in train.pairs_note.toolTip()

    # The run, as it starts, splits those 15 training pairs.
    started = events.Started(
        "run", 0, 8, plan.train_pairs, plan.heldout_pairs, device="cpu", quantization="none"
    )
    train.live_panel.show_event(started, plot=False)
    assert train.run_detail.text() == (
        f"On cpu (full precision), 15 training pairs: {plan.train_pairs} to train on, "
        f"{plan.heldout_pairs} held out."
    )


def test_without_rewrites_train_says_usable_pairs_only(qtbot, make_window, gui_store, tiny_model_dir):
    register_model(gui_store, tiny_model_dir, name="tiny")
    for index, verdict in enumerate(["a", "b", "tie", "a"]):
        gui_store.record_pair(
            messages=[{"role": "user", "content": f"Question {index}?"}],
            text_a=f"Answer A{index}.",
            text_b=f"Answer B{index}.",
            verdict=verdict,
        )
    window = make_window()
    assert window.status_pairs.text() == "4 pairs collected · 3 usable for training"
    window.show_view("train")
    train = window.view("train")
    qtbot.waitUntil(lambda: train.preset is not None, timeout=WAIT_MS)
    assert train.pairs_pill.text() == "3 usable pairs"
    assert "training pairs" not in train.pairs_note.text()
    # Too few to train: counted in the same unit as the pill.
    assert "Train needs at least 8 usable pairs; tiny has 3 usable pairs." in train.start_reason.text()
