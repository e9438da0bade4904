"""Pair counts: the recount after one verdict against the full recount it replaced, at 20,000 comparisons.

Collect's pill, the Data view, the status bar and Train show how many judged comparisons can train and
how many training pairs they give (``desktop_dpo.core.dpo.pair_counts.store_pair_counts``), on the GUI
thread, after every verdict. The count used to build every comparison's training pairs again each time the
database changed; now it recounts only the comparisons the store's change log names.

Arms, in one run on one database file (WAL, ``synchronous=FULL``, as the app opens it):

- ``incremental``: save one verdict (not timed), then ``store_pair_counts(store)``: what the window pays.
- ``full``: ``count_pairs(store.comparison_views())``: the previous recount, every comparison read and
  turned into pairs with the same ``pairs_from_comparisons`` training uses.

The arms alternate over --rounds rounds (a verdict before each incremental one); medians are compared, and
every round checks that both arms give the same counts (and, at the end, a fresh connection's count too).
The comparisons are a mix like a person's: mostly picks, some rewrites, ties, "both bad", skips, deletes.

Run from the repository root:  python bench/pair_counts.py [--comparisons 20000] [--rounds 9]
Last line:  pair_counts: ratio=X incremental_ms=Y full_ms=Z comparisons=N
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from desktop_dpo.core.dpo.pair_counts import count_pairs, store_pair_counts  # noqa: E402
from desktop_dpo.core.store import Store  # noqa: E402

VERDICTS = ["a"] * 6 + ["b"] * 6 + ["tie", "both_bad", "skip"]


def judge(store: Store, index: int, rng: random.Random) -> int:
    """One comparison as Collect saves it: a prompt, two answers a few sentences long, a verdict, sometimes
    a rewrite. Returns its id."""
    verdict = rng.choice(VERDICTS)
    edit = {}
    if rng.random() < 0.1:
        edit = {
            "edited_text": f"A rewritten answer to question {index}, " * 4,
            "edited_side": rng.choice("ab"),
        }
    return store.record_pair(
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": f"Question {index}: how does this work, step by step?"},
        ],
        text_a=f"First answer to question {index}. " * 12,
        text_b=f"Second answer to question {index}. " * 12,
        verdict=verdict,
        model_a_id=None,
        model_b_id=None,
        a_shown_left=rng.random() < 0.5,
        note="Checked the numbers." if rng.random() < 0.05 else None,
        **edit,
    )


def fill(store: Store, comparisons: int, rng: random.Random) -> None:
    """``comparisons`` comparisons in one transaction (a judged history, as if imported), 2% deleted."""
    with store.atomic():
        ids = [judge(store, index, rng) for index in range(comparisons)]
    store.set_comparisons_deleted(rng.sample(ids, comparisons // 50))


def timed_ms(call: object) -> tuple[float, Any]:
    """Run ``call`` once: milliseconds and its result."""
    start = time.perf_counter()
    result = call()  # type: ignore[operator]
    return (time.perf_counter() - start) * 1000, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comparisons", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "prefs.sqlite"
        store = Store.open(path)
        try:
            fill(store, args.comparisons, rng)
            first_ms, counts = timed_ms(lambda: store_pair_counts(store))  # the first count reads everything
            incremental: list[float] = []
            full: list[float] = []
            for index in range(args.rounds):
                judge(store, args.comparisons + index, rng)
                arms = [("incremental", lambda: store_pair_counts(store))]
                arms.append(("full", lambda: count_pairs(store.comparison_views())))
                results = {}
                for name, call in arms if index % 2 == 0 else reversed(arms):
                    ms, results[name] = timed_ms(call)
                    (incremental if name == "incremental" else full).append(ms)
                if results["incremental"] != results["full"]:
                    raise SystemExit(f"the counts differ: {results}")
                counts = results["full"]
            with Store.open(path) as fresh:
                if store_pair_counts(fresh) != counts:
                    raise SystemExit("a fresh connection counts differently")
        finally:
            store.close()
    incremental_ms, full_ms = statistics.median(incremental), statistics.median(full)
    print(
        f"counts: {counts.usable} usable, {counts.pairs} training pairs, {counts.rewrites} rewrites; "
        f"first count {first_ms:.1f} ms",
        file=sys.stderr,
    )
    print(
        f"pair_counts: ratio={incremental_ms / full_ms:.4f} incremental_ms={incremental_ms:.3f} "
        f"full_ms={full_ms:.1f} comparisons={args.comparisons + args.rounds}"
    )


if __name__ == "__main__":
    main()
