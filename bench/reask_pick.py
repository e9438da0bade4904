"""Re-ask pick: choosing the pair to show again in SQL against reading every comparison, at 20,000.

When a repeat is due (one Sample in twenty, ``desktop_dpo.core.reask``), Collect picks an earlier judged pair
on the GUI thread. It used to read every comparison with its prompt and both answers and filter them in
Python (``pick_repeat(store.comparison_views(), rng)``); now the store counts the candidates and reads the
one drawn (``pick_repeat_in(store, rng)``, two small queries).

Arms, in one run on one database file (WAL, as the app opens it), alternating over --rounds rounds:

- ``new``: ``pick_repeat_in(store, random.Random(seed))``: what the window pays now.
- ``old``: ``pick_repeat(store.comparison_views(), random.Random(seed))``: what it paid before.

Each round checks that both arms, drawing with the same seed, pick the same comparison. The history is a
mix like a person's (mostly picks, some ties, "both bad", skips, 2% deleted, 3% already re-asked).

Run from the repository root:  python bench/reask_pick.py [--comparisons 20000] [--rounds 9]
Last line:  reask_pick: ratio=X new_ms=Y old_ms=Z comparisons=N
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pair_counts import judge, timed_ms  # noqa: E402  (bench/ is the script's folder)

from desktop_dpo.core.reask import pick_repeat, pick_repeat_in  # noqa: E402
from desktop_dpo.core.store import Store  # noqa: E402


def fill(store: Store, comparisons: int, rng: random.Random) -> None:
    """``comparisons`` judged comparisons in one transaction (``pair_counts.judge``: a person's mix), a few
    deleted and a few re-asked."""
    with store.atomic():
        ids = [judge(store, index, rng) for index in range(comparisons)]
        for original_id in rng.sample(ids, comparisons * 3 // 100):
            original = store.get_comparison(original_id)
            assert original is not None
            store.add_comparison(
                prompt_id=original.prompt_id,
                generation_a_id=original.generation_a_id,
                generation_b_id=original.generation_b_id,
                verdict=rng.choice("ab"),
                a_shown_left=not original.a_shown_left,
                repeat_of=original_id,
            )
    store.set_comparisons_deleted(rng.sample(ids, comparisons // 50))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comparisons", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"new": [], "old": []}
    with tempfile.TemporaryDirectory() as folder, Store.open(Path(folder) / "prefs.sqlite") as store:
        fill(store, args.comparisons, random.Random(0))
        total = store.count_comparisons()
        for seed in range(args.rounds):
            arms = [
                ("new", lambda seed=seed: pick_repeat_in(store, random.Random(seed))),
                ("old", lambda seed=seed: pick_repeat(store.comparison_views(), random.Random(seed))),
            ]
            picked = {}
            for name, call in arms if seed % 2 == 0 else reversed(arms):
                ms, picked[name] = timed_ms(call)
                times[name].append(ms)
            if picked["new"] != picked["old"] or picked["new"] is None:
                raise SystemExit(f"the arms picked differently: {picked}")
    new_ms, old_ms = statistics.median(times["new"]), statistics.median(times["old"])
    print(
        f"reask_pick: ratio={new_ms / old_ms:.4f} new_ms={new_ms:.2f} old_ms={old_ms:.1f} comparisons={total}"
    )


if __name__ == "__main__":
    main()
