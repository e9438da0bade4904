"""A model's lineage: base, then each round of alignment, with what made it."""

from __future__ import annotations

from desktop_dpo.core.lineage import model_lineage, round_number


def _model(store, name, *, parent=None, run=None, source="user"):
    return store.add_model(
        name=name, path=f"/models/{name}", kind="gguf", fingerprint=f"fp-{name}", source=source,
        parent_model_id=parent, run_id=run,
    )  # fmt: skip


def test_two_rounds_are_listed_oldest_first_with_their_runs(memory_store):
    store = memory_store
    base = _model(store, "gemma", source="demo")
    ids = [
        store.record_pair(
            messages=[{"role": "user", "content": f"q{i}"}], text_a="a", text_b="b", verdict="a"
        )
        for i in range(3)
    ]
    run1 = store.create_run(
        name="first", base_model_id=base, config={"beta": 0.1, "lr": 5e-5, "lora_r": 16}, comparison_ids=ids
    )
    store.update_run(run1, status="completed", final_metrics={"rewards/accuracies": 0.9})
    round1 = _model(store, "gemma · run 1", parent=base, run=run1, source="aligned")
    run2 = store.create_run(
        name="second",
        base_model_id=round1,
        config={"beta": 0.2},
        comparison_ids=ids[:2],
        reference=f"model:{base}",
    )
    round2 = _model(store, "gemma · run 2", parent=round1, run=run2, source="aligned")

    steps = model_lineage(store, round2)
    assert [s.model_id for s in steps] == [base, round1, round2]
    assert steps[0].run_id is None and steps[0].describe() == "gemma (demo)"
    assert steps[1].pairs == 3 and steps[2].pairs == 2
    assert (
        steps[1].describe()
        == "gemma · run 1: run 1 “first”, 3 pairs, β 0.1, lr 5e-05, lora r 16, train accuracy 90%"
    )
    assert steps[2].describe().endswith(f"β 0.2, reference: model {base}")
    assert round_number(store, round2) == 2 and round_number(store, base) == 0


def test_a_removed_parent_ends_the_chain_and_a_loop_does_not_hang(memory_store):
    store = memory_store
    a = _model(store, "a")
    b = _model(store, "b", parent=a)
    store.remove_model(a)
    assert [s.name for s in model_lineage(store, b)] == ["b"]
    c = _model(store, "c")
    d = _model(store, "d", parent=c)
    store._conn.execute("UPDATE models SET parent_model_id=? WHERE id=?", (d, c))  # a damaged chain
    assert {s.name for s in model_lineage(store, d)} == {"c", "d"}
    assert model_lineage(store, 999) == []
