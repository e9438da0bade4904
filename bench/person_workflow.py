"""``bench/efficacy.py --workflow person``: what a person gets from a budget of picks, with and without
pair selection, for each rule, in one run.

Each (rule, arm) runs ``desktop_dpo.core.person_loop.run_person`` in a home folder of its own (the demo
model is unpacked once and copied in): ``random`` shows two answers as they come; ``selected`` does too
before the first run (so round 1 is the same in both arms: a check that the run is repeatable), then
samples four and shows the pair ``pair_selection`` chooses, except after a run that learnt mostly from
chosen pairs, when two come as they are again (``--keep-choosing`` chooses then too). Each round adds a
point to the curve (win rate of the current model over the base on the held-out prompts, judged blind by
the same rule, against picks so far; ``--eval-draws`` answers each prompt that many times, 4 by default).
Ties and "both bad" picks count against the budget: they are the person's time too. Each round exports the
file the app goes on with, Q8_0, and the evaluation runs both models at it (the base as its trainable copy at
Q8_0; ``--working Q4_K_M``: as the app did before, on the base's own grid). Each round trains
with the workflow's settings (the demo's, with ``--sft-weight``), or with ``--train app`` with what the
Train view fills in for a new run on this machine (its preset, sized for a round's pairs; ``--train
preset``: the preset alone).

Prints, per arm, the curve and a headline:
    efficacy: workflow=person rule=.. arm=.. picks=.. win_rate=.. ci_low=.. ci_high=.. n=.. ties=.. both_bad=..
and per rule, with both arms, the two arms' models against each other round by round (each held-out prompt
and draw was answered with the same seed in both arms, so the pair is judged by the rule: less noise than two
evaluations against the base, and it does not saturate near 100%; ``--head-to-head DIR`` prints it for a kept
run):
    head_to_head: rule=.. round=.. picks=.. selected_over_random=.. ci_low=.. ci_high=.. n=.. ties=.. both_bad=..
and the selection's gain at the full budget:
    selection: rule=.. picks=.. win_selected=.. win_random=.. gain=.. head_to_head=..
Writes bench/out/person_workflow.json and the curve as bench/out/person_curve.svg.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "out"
ARMS = {"random": False, "selected": True}


def _note(start: float, text: str) -> None:
    print(f"[{time.perf_counter() - start:6.0f} s] {text}", file=sys.stderr, flush=True)


def _share_demo_files(source: Path, target: Path) -> None:
    """Copies the unpacked demo model and its trainable copy from the first arm's home (saves minutes)."""
    for sub in ("models",):
        if (source / sub).exists() and not (target / sub).exists():
            shutil.copytree(source / sub, target / sub)


BASE_ANSWERS: dict[Any, Any] = {}  # the base model's evaluation answers, shared by every arm and round


def run_arm(home: Path, rule_name: str, selection: bool, args: Any, start: float) -> dict[str, Any]:
    """One (rule, arm): the person loop in ``home``; returns its report."""
    from desktop_dpo.config import AppPaths
    from desktop_dpo.core.demo_loop import DemoSettings
    from desktop_dpo.core.evaluate import RULES
    from desktop_dpo.core.jobs import Log, drive
    from desktop_dpo.core.person_loop import PersonSettings, PickMade, RoundMeasured, run_person
    from desktop_dpo.core.store import Store

    paths = AppPaths.in_home(home).ensure()
    demo = DemoSettings(seed=args.seed, rule=RULES[rule_name]())
    sft_weight = args.sft_weight
    if args.train != "workflow":  # the Train view's form for a new run, as it comes: this machine's preset
        from desktop_dpo.core.dpo.config import default_config, sized_for_pairs

        train = default_config()
        if args.train == "app":  # sized for a round's pairs (fewer than its picks), as the view sizes it
            train, _why = sized_for_pairs(train, args.picks // args.rounds)
        demo = dataclasses.replace(demo, train=train)
        sft_weight = train.sft_weight
    person = PersonSettings(
        picks=args.picks,
        rounds=args.rounds,
        selection=selection,
        before_run=args.before_run,
        after_run=args.after_run,
        alternate=not args.keep_choosing,
        reward_per_token=args.per_token,
        sft_weight=sft_weight,
        loss_type=args.loss,
        train_from=args.train_from,
        evaluation_draws=args.eval_draws,
        working=args.working,
    )
    arm = "selected" if selection else "random"

    def on_event(event: object) -> None:
        if isinstance(event, PickMade) and event.done % 25 == 0:
            _note(start, f"  {rule_name}/{arm}: {event.done}/{event.total} picks")
        elif isinstance(event, RoundMeasured):
            _note(
                start, f"  {rule_name}/{arm} round {event.round}: {event.summary.sentence()} {event.seconds}"
            )
        elif isinstance(event, Log):
            _note(start, f"  {event.message}")

    with Store.open(paths.db_path) as store:
        result = drive(run_person(store, paths, demo, person, base_answers=BASE_ANSWERS), on_event)
    return {
        "rule": rule_name,
        "arm": arm,
        "verdicts": result.verdicts,
        "hows": result.hows,
        "curve": [
            {
                "round": point.round,
                "picks": point.picks,
                "pairs": point.pairs,
                "win_rate": point.summary.win_rate,
                "ci_low": point.summary.ci_low,
                "ci_high": point.summary.ci_high,
                "n": point.summary.n_decisive,
                "ties": point.summary.ties,
                "both_bad": point.summary.both_bad,
                "seconds": point.seconds,
            }
            for point in result.curve
        ],
        "settings": result.settings,
    }


def curve_svg(reports: list[dict[str, Any]], width: int = 640, height: int = 300) -> str:
    """The curves (win rate against picks, one line per rule and arm: solid selected, dashed random; the 95%
    intervals as bars beside each point) as SVG, from 40% to 100%, with the 50% (no change) and 80% (the
    goal) lines marked."""
    left, right, top, bottom, floor = 48, 230, 28, 36, 0.4
    plot_w, plot_h = width - left - right, height - top - bottom
    max_picks = max(p["picks"] for r in reports for p in r["curve"])

    def x(picks: float) -> float:
        return left + plot_w * picks / max_picks

    def y(rate: float) -> float:
        return top + plot_h * (1 - (max(rate, floor) - floor) / (1 - floor))

    colors = {"shorter_wins": "#2f6db5", "speaks_to_you": "#c0552b", "plain_words": "#3f8f4f"}
    spare = ["#7a4fb0", "#555"]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        'font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="14">Win rate of the trained model over the base (held-out prompts, judged blind)</text>',
    ]
    for rate in (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
        marked = rate in (0.5, 0.8)
        style = ' stroke="#888" stroke-dasharray="4 3"' if marked else ' stroke="#e3e3e3"'
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(rate):.1f}" y2="{y(rate):.1f}"{style}/>')
        parts.append(f'<text x="{left - 6}" y="{y(rate) + 4:.1f}" text-anchor="end">{rate:.0%}</text>')
    parts.append(f'<text x="{left + 4}" y="{y(0.8) - 4:.1f}" fill="#666">goal</text>')
    parts.append(f'<text x="{left + 4}" y="{y(0.5) - 4:.1f}" fill="#666">no change</text>')
    for picks in sorted({p["picks"] for r in reports for p in r["curve"]}):
        parts.append(f'<text x="{x(picks):.1f}" y="{top + plot_h + 16}" text-anchor="middle">{picks}</text>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 4}" text-anchor="middle">picks</text>')
    for index, report in enumerate(reports):
        color = colors.get(report["rule"]) or spare[index % len(spare)]
        dash = "" if report["arm"] == "selected" else ' stroke-dasharray="5 3"'
        points = [(x(p["picks"]), y(p["win_rate"] or 0.0), p) for p in report["curve"]]
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py, _ in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
        for px, py, p in points:
            offset = (index - (len(reports) - 1) / 2) * 4
            parts.append(
                f'<line x1="{px + offset:.1f}" x2="{px + offset:.1f}" y1="{y(p["ci_low"]):.1f}" '
                f'y2="{y(p["ci_high"]):.1f}" stroke="{color}" stroke-opacity="0.45" stroke-width="1.5"/>'
            )
            parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{color}"/>')
        label_y = top + 14 + 16 * index
        parts.append(
            f'<line x1="{left + plot_w + 14}" x2="{left + plot_w + 34}" y1="{label_y - 4}" y2="{label_y - 4}" '
            f'stroke="{color}" stroke-width="2"{dash}/>'
        )
        label = f"{report['rule']}, {report['arm']} pairs"
        parts.append(f'<text x="{left + plot_w + 38}" y="{label_y}">{label}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def arm_home(root: Path, rule: str, arm: str) -> Path:
    """The app home a (rule, arm) runs in, under the bench's folder (``--keep DIR``)."""
    return root / f"{rule}-{arm}"


def arm_report(reports: list[dict[str, Any]], rule: str, arm: str) -> dict[str, Any] | None:
    """The report of a (rule, arm), or None when that arm did not run."""
    return next((r for r in reports if r["rule"] == rule and r["arm"] == arm), None)


def pick_costs(selected: dict[str, Any], random: dict[str, Any]) -> tuple[float, float]:
    """What showing a selected pair costs against two answers as they come, per pick, over the rounds whose
    pairs the selected arm chose (it scored answers; before a run, and in the round after a run that learnt
    from chosen pairs, both arms sample 2): ``(sampling 4 answers ÷ sampling 2, sampling 4 and scoring them ÷
    sampling 2)``, from the two arms' reports of one rule."""
    chosen = {p["round"] for p in selected["curve"] if p["seconds"].get("scoring", 0.0) > 0}

    def seconds(report: dict[str, Any], part: str) -> float:
        return sum(point["seconds"].get(part, 0.0) for point in report["curve"] if point["round"] in chosen)

    plain = seconds(random, "picks") or float("nan")
    picks, scoring = seconds(selected, "picks"), seconds(selected, "scoring")
    return (picks - scoring) / plain, picks / plain


def _final_answers(home: Path) -> list[dict[tuple[Any, ...], str]]:
    """Each round's held-out answers of the model it trained, in ``home``'s store: per round (in order), the
    answer text by (evaluation seed, prompt, sampler seed); the same key names the same draw in every arm."""
    from desktop_dpo.config import AppPaths
    from desktop_dpo.core.store import Store

    paths = AppPaths.in_home(home)
    rounds: dict[int | None, dict[tuple[Any, ...], str]] = {}
    prompts: dict[int | None, str | None] = {None: None}  # prompt id -> its messages as JSON (each read once)
    with Store.open(paths.db_path) as store:
        for evaluation in reversed(store.list_evaluations()):  # oldest first: round by round
            answers = rounds.setdefault(evaluation.aligned_model_id, {})
            for vote in store.evaluation_votes(evaluation.id):
                if vote.prompt_id not in prompts:
                    prompt = store.get_prompt(vote.prompt_id)
                    prompts[vote.prompt_id] = json.dumps(prompt.messages) if prompt else None
                answers[(evaluation.settings.get("seed"), prompts[vote.prompt_id], vote.seed)] = (
                    vote.aligned_text
                )
    return list(rounds.values())


def head_to_head(selected_home: Path, random_home: Path, rule_name: str) -> list[dict[str, Any]]:
    """The two arms' models against each other, round by round, judged by the rule: each held-out prompt and
    draw was answered with the same sampler seed by both arms' models (the evaluations against the base
    recorded the answers), so the selected arm's answer and the random arm's form a pair, judged as the
    evaluation judges (``aligned`` = the selected arm's model). Paired, so the base's own answers and their
    draws are out of the comparison; a round both arms trained alike gives ties only (round 1, before a run)."""
    from desktop_dpo.core.evaluate import RULES, EvaluationSummary, judge_by_rule, vote_for

    rule = RULES[rule_name]()
    report = []
    for index, (chosen, plain) in enumerate(
        zip(_final_answers(selected_home), _final_answers(random_home), strict=False), 1
    ):
        keys = [key for key in chosen if key in plain]
        votes = [
            (key[1], vote_for(judge_by_rule(chosen[key], plain[key], rule), aligned_is_a=True))
            for key in keys
        ]
        summary = EvaluationSummary.from_prompt_votes(votes)
        report.append(
            {
                "round": index,
                "win_rate": summary.win_rate,
                "ci_low": summary.ci_low,
                "ci_high": summary.ci_high,
                "n": summary.n_decisive,
                "ties": summary.ties,
                "both_bad": summary.both_bad,
                "pairs": len(keys),
            }
        )
    return report


def print_head_to_head(rule: str, rounds: list[dict[str, Any]]) -> None:
    """One line per round: how often the selected arm's model won against the random arm's."""
    for point in rounds:
        rate = "none" if point["win_rate"] is None else f"{point['win_rate']:.3f}"
        spent = f" picks={point['picks']}" if "picks" in point else ""
        print(
            f"head_to_head: rule={rule} round={point['round']}{spent} selected_over_random={rate} "
            f"ci_low={point['ci_low']:.3f} ci_high={point['ci_high']:.3f} n={point['n']} ties={point['ties']} "
            f"both_bad={point['both_bad']}"
        )


def compare_kept(root: Path, rules: list[str]) -> None:
    """``--head-to-head DIR``: the head-to-head of a kept run's arms (``--keep DIR`` of an earlier run, both
    arms), from the answers its evaluations recorded; nothing is sampled or trained."""
    for rule in rules:
        selected, plain = arm_home(root, rule, "selected"), arm_home(root, rule, "random")
        if selected.exists() and plain.exists():
            print_head_to_head(rule, head_to_head(selected, plain, rule))
        else:
            print(f"head_to_head: rule={rule} skipped: {root} has not both arms of it", file=sys.stderr)


def run_person_bench(args: Any) -> None:
    """Runs every (rule, arm) asked for, prints the headlines and writes the report and the plot."""
    from desktop_dpo.core.offline import lock_down

    lock_down()
    rules = [name.strip() for name in args.rules.split(",") if name.strip()]
    arms = [name.strip() for name in args.arms.split(",") if name.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"Unknown arm {unknown[0]!r}: choose from {', '.join(ARMS)}.")
    root = args.keep or Path(tempfile.mkdtemp(prefix="efficacy-person-"))
    start = time.perf_counter()
    reports: list[dict[str, Any]] = []
    first_home: Path | None = None
    for rule in rules:
        for arm in arms:
            home = arm_home(root, rule, arm)
            home.mkdir(parents=True, exist_ok=True)
            if first_home is not None:
                _share_demo_files(first_home / "data", home / "data")
            _note(start, f"{rule}, {arm} pairs")
            reports.append(run_arm(home, rule, ARMS[arm], args, start))
            first_home = first_home or home

    for rule in rules:
        chosen = arm_report(reports, rule, "selected")
        if chosen is not None and arm_report(reports, rule, "random") is not None:
            rounds = head_to_head(arm_home(root, rule, "selected"), arm_home(root, rule, "random"), rule)
            for point, spent in zip(rounds, chosen["curve"], strict=False):
                point["picks"] = spent["picks"]
            chosen["head_to_head"] = rounds
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "person_workflow.json").write_text(json.dumps(reports, indent=2), encoding="utf-8")
    (OUT / "person_curve.svg").write_text(curve_svg(reports), encoding="utf-8")
    for each in reports:
        for point in each["curve"]:
            print(
                f"curve: rule={each['rule']} arm={each['arm']} picks={point['picks']} "
                f"win_rate={point['win_rate'] or 0:.3f} ci_low={point['ci_low']:.3f} n={point['n']}"
            )
    for rule in rules:
        chosen, plain = arm_report(reports, rule, "selected"), arm_report(reports, rule, "random")
        if chosen is None or plain is None:
            continue
        print_head_to_head(rule, chosen["head_to_head"])
        last, other, paired = chosen["curve"][-1], plain["curve"][-1], chosen["head_to_head"][-1]
        costs = pick_costs(chosen, plain)
        print(
            f"selection: rule={rule} picks={last['picks']} win_selected={last['win_rate'] or 0:.3f} "
            f"win_random={other['win_rate'] or 0:.3f} gain={(last['win_rate'] or 0) - (other['win_rate'] or 0):+.3f} "
            f"head_to_head={paired['win_rate'] or 0:.3f} "
            f"k4_sampling_ratio={costs[0]:.2f} k4_pick_ratio={costs[1]:.2f}"
        )
    print(f"seconds={time.perf_counter() - start:.0f}")
    for report in reports:
        last = report["curve"][-1]
        print(
            f"efficacy: workflow=person rule={report['rule']} arm={report['arm']} picks={last['picks']} "
            f"win_rate={last['win_rate'] or 0:.3f} ci_low={last['ci_low']:.3f} ci_high={last['ci_high']:.3f} "
            f"n={last['n']} ties={last['ties']} both_bad={last['both_bad']}"
        )
