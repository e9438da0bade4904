"""The person bench's head to head (``bench/person_workflow.py``): the two arms' models met on the same draws.

The README's conclusion about the pair selection rests on it, so it is held to a hand-built pair of stores:
each arm's evaluations against the base recorded its model's answers, and the same (evaluation seed, prompt,
sampler seed) must pair the same draw of the two arms, round by round.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from desktop_dpo.config import AppPaths
from desktop_dpo.core.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from person_workflow import head_to_head

SPEAKS = "You can fold your shirt in thirds and you will find it fits your drawer."
DOES_NOT = "One can fold a shirt in thirds and it will then fit the drawer quite well."
PROMPTS = [[{"role": "user", "content": f"How do I pack item {n}?"}] for n in range(4)]


def _arm(home: Path, rounds: list[dict[tuple[int, int], str]]) -> None:
    """An arm's store: one evaluation per round (its own model), the answers keyed by (prompt, sampler seed)."""
    paths = AppPaths.in_home(home)
    paths.db_path.parent.mkdir(parents=True, exist_ok=True)
    with Store.open(paths.db_path) as store:
        base = store.add_model(name="base", path="/m/base.gguf", kind="gguf", fingerprint="base")
        for number, answers in enumerate(rounds, 1):
            model = store.add_model(
                name=f"round {number}",
                path=f"/m/{number}.gguf",
                kind="gguf",
                fingerprint=f"{home.name}{number}",
            )
            evaluation = store.create_evaluation(
                name=f"round {number}", base_model_id=base, aligned_model_id=model, settings={"seed": 7}
            )
            for (prompt, seed), text in answers.items():
                store.add_evaluation_vote(
                    evaluation,
                    prompt_id=store.add_prompt(PROMPTS[prompt]),
                    base_text="the base's answer",
                    aligned_text=text,
                    vote="aligned",
                    judge="speaks_to_you",
                    seed=seed,
                )


def test_the_head_to_head_pairs_the_same_draw_of_both_arms_round_by_round(tmp_path):
    same = {(p, s): DOES_NOT for p in range(4) for s in (1, 2)}  # round 1: both arms trained alike
    selected = {(p, s): SPEAKS if p < 3 else DOES_NOT for p in range(4) for s in (1, 2)}
    selected[(0, 9)] = DOES_NOT  # a draw only this arm made: it has nothing to meet
    plain = {(p, s): DOES_NOT if p < 3 else SPEAKS for p in range(4) for s in (1, 2)}
    _arm(tmp_path / "selected", [same, selected])
    _arm(tmp_path / "random", [same, plain])

    first, second = head_to_head(tmp_path / "selected", tmp_path / "random", "speaks_to_you")

    assert first["round"] == 1 and first["ties"] == 8 and first["n"] == 0 and first["win_rate"] is None
    assert second["pairs"] == 8, "the draw only one arm made is left out"
    assert (second["n"], second["ties"]) == (8, 0)
    assert second["win_rate"] == pytest.approx(6 / 8), (
        "the selected arm's model speaks to you on 3 prompts of 4"
    )
    assert second["ci_low"] < 0.75 < second["ci_high"]


def test_the_head_to_head_turns_round_when_the_arms_are_swapped(tmp_path):
    better = {(p, 1): SPEAKS for p in range(4)}
    worse = {(p, 1): DOES_NOT for p in range(4)}
    _arm(tmp_path / "a", [better])
    _arm(tmp_path / "b", [worse])

    assert head_to_head(tmp_path / "a", tmp_path / "b", "speaks_to_you")[0]["win_rate"] == 1.0
    assert head_to_head(tmp_path / "b", tmp_path / "a", "speaks_to_you")[0]["win_rate"] == 0.0
