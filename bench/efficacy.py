"""Efficacy: does the whole loop make the demo model better by the rule it was taught with?

Runs the full demo (``desktop_dpo.core.demo_loop.run_demo`` with its default settings, not the quick
version) in a private, empty home folder: unpack the demo model, make its trainable copy, sample answers
to the training prompts and keep the rule's best against its worst, train, export Q4_K_M, then answer
the held-out prompts with the base (Q4_K_M) and the aligned model (Q4_K_M), same seed and settings per
prompt, judged blind by the same rule ("the shorter answer wins, but an answer under 8 words or
repeating itself loses").

The figure is the aligned model's win rate over the decisive votes (ties and "both bad" are counted
apart) with its 95% Wilson interval. Goal: win rate ≥ 80% with the interval's lower bound above 50%.

No peer arm: the base model is the comparison, inside the same run. The whole run takes the better part
of an hour on 2 shared cores (sampling and training dominate); ``--keep DIR`` keeps the home folder
(database, pairs, run, export) to look at afterwards. Votes and settings go to ``bench/out/efficacy.json``.

Run from the repository root:  python bench/efficacy.py [--seed 0] [--keep DIR]
Last line:  efficacy: win_rate=.. ci_low=.. ci_high=.. n=.. ties=..
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out" / "efficacy.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="the demo's seed (split, samples, evaluation)")
    parser.add_argument("--keep", type=Path, help="use this folder as the home and keep it")
    parser.add_argument(
        "--workflow",
        choices=("demo", "person"),
        default="demo",
        help="demo: eight answers per prompt, best against worst; person: two shown, one pick each",
    )
    parser.add_argument("--picks", type=int, default=150, help="person: the pick budget over all rounds")
    parser.add_argument("--rounds", type=int, default=3, help="person: rounds (a point of the curve each)")
    parser.add_argument(
        "--rules",
        default="shorter_wins,speaks_to_you",
        help="person: the rules to run, comma-separated (shorter_wins, speaks_to_you, plain_words)",
    )
    parser.add_argument(
        "--arms",
        default="random,selected",
        help="person: random pairs, selected pairs or both (comma-separated)",
    )
    parser.add_argument(
        "--before-run",
        default="as_they_come",
        choices=("as_they_come", "different", "similar"),
        help="person, selected pairs: before the first run, two answers as they come (the app's rule), the "
        "most different of 4, or the closest of 4 that differ",
    )
    parser.add_argument(
        "--after-run",
        default="surest",
        choices=("surest", "least_sure", "favourites", "changed_mind"),
        help="person, selected pairs: after a run, the pair it is surest about (the app's rule), least sure, "
        "the two answers it likes most, or the pair it ordered most surely against the run before it (surest "
        "after a first run; with the rounds alternating, the round after a second run comes as it is, so use "
        "it with --keep-choosing)",
    )
    parser.add_argument(
        "--keep-choosing",
        action="store_true",
        help="person, selected pairs: choose by every run, also one that learnt from chosen pairs (the app "
        "shows the round after such a run as it comes)",
    )
    parser.add_argument(
        "--per-token",
        action="store_true",
        help="person, selected pairs: choose by each answer's reward per token, not summed over its tokens "
        "(the app's)",
    )
    parser.add_argument(
        "--sft-weight",
        type=float,
        default=1.0,
        help="person: the SFT term's weight in every round (the demo's: 1.0)",
    )
    parser.add_argument(
        "--loss",
        default="sigmoid",
        choices=("sigmoid", "kto"),
        help='person: the loss of every round: DPO (the demo\'s) or KTO, which learns from "both bad" picks too',
    )
    parser.add_argument(
        "--eval-draws",
        type=int,
        default=4,
        help="person: answers per held-out prompt in each round's evaluation, each draw with its own seeds "
        "(the interval counts prompts, not draws); 1 is the demo's evaluation, whose ~50 votes a point "
        "left ±12 points of noise",
    )
    parser.add_argument(
        "--train-from",
        default="current",
        choices=("current", "base"),
        help="person: each round trains the current model on the round's picks (the app's), or the base on "
        "every pick so far",
    )
    parser.add_argument(
        "--working",
        default="Q8_0",
        choices=("Q4_K_M", "Q8_0"),
        help="person: the file type each round exports and samples from, and the evaluation compares at "
        "(the base as its trainable copy at Q8_0): Q8_0 as the app goes on with it, or Q4_K_M, as it did before",
    )
    parser.add_argument(
        "--train",
        default="workflow",
        choices=("workflow", "app", "preset"),
        help="person: train each round with the workflow's settings (the demo's, with --sft-weight), with what "
        "the Train view fills in for a new run on a round's picks on this machine (app), or with this "
        "machine's preset alone (preset: the Train view before it sized runs on a few pairs)",
    )
    parser.add_argument(
        "--head-to-head",
        type=Path,
        metavar="DIR",
        help="person: only compare the two arms' models of an earlier run kept in DIR (--keep DIR, both arms) "
        "against each other, round by round, from the answers its evaluations recorded; nothing is sampled",
    )
    args = parser.parse_args()
    if args.head_to_head is not None:
        from person_workflow import compare_kept

        compare_kept(args.head_to_head, [name.strip() for name in args.rules.split(",") if name.strip()])
        return
    if args.workflow == "person":
        from person_workflow import run_person_bench

        run_person_bench(args)
        return

    from desktop_dpo.core.offline import lock_down

    lock_down()
    from desktop_dpo.config import AppPaths
    from desktop_dpo.core.demo_loop import DemoSettings, DemoStage, PairPicked, run_demo
    from desktop_dpo.core.evaluate import EvaluationVoted
    from desktop_dpo.core.jobs import Log, drive
    from desktop_dpo.core.store import Store

    home = args.keep or Path(tempfile.mkdtemp(prefix="efficacy-"))
    paths = AppPaths.in_home(home).ensure()
    settings = DemoSettings(seed=args.seed)
    start = time.perf_counter()
    stage_start = start
    stage_times: dict[str, float] = {}
    current = None

    def note(text: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f} s] {text}", file=sys.stderr, flush=True)

    def on_event(event: object) -> None:
        nonlocal current, stage_start
        name = type(event).__name__
        if isinstance(event, DemoStage):
            now = time.perf_counter()
            if current is not None:
                stage_times[current] = now - stage_start
            current = f"{event.stage}-{event.round}" if event.round else event.stage
            stage_start = now
            note(f"{event.number}/{event.total} {event.title}")
        elif isinstance(event, PairPicked) and event.done % 10 == 0:
            note(f"  {event.done}/{event.total} prompts sampled, {event.kept_so_far} pairs")
        elif isinstance(event, EvaluationVoted):
            note(f"  vote {event.vote}")
        elif name in ("Started", "EvalMetrics", "Finished", "TrainWarning"):
            note(f"  {event}")
        elif isinstance(event, Log):
            note(f"  {event.message}")

    with Store.open(paths.db_path) as store:
        result = drive(run_demo(store, paths, settings), on_event)
    stage_times[str(current)] = time.perf_counter() - stage_start

    summary = result.summary
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "settings": result.settings,
                "pairs": result.pairs,
                "skipped_prompts": result.skipped_prompts,
                "gguf": result.gguf_path,
                "stage_seconds": {k: round(v, 1) for k, v in stage_times.items()},
                "summary": summary.sentence(),
                "votes": [
                    {"vote": v.vote, "seed": v.seed, "base": v.base.text, "aligned": v.aligned.text}
                    for v in result.votes
                ],
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    print(summary.sentence())
    print(
        f"pairs={result.pairs} skipped_prompts={result.skipped_prompts} seconds={time.perf_counter() - start:.0f}"
    )
    rate = summary.win_rate if summary.win_rate is not None else 0.0
    print(
        f"efficacy: win_rate={rate:.3f} ci_low={summary.ci_low:.3f} ci_high={summary.ci_high:.3f} "
        f"n={summary.n_decisive} ties={summary.ties} both_bad={summary.both_bad}"
    )


if __name__ == "__main__":
    main()
