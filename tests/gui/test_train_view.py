"""The Train view, driven through its real widgets, training the tiny Llama (``tiny_model_dir``) for real.

Runs are kept tiny (a dozen pairs, 64 tokens, one or two epochs) and train, as in the app, in their own
child process. Where a test must act in the middle of a run (stop it, count timer ticks while it trains),
the run is held at a known step inside that process (a file it waits on, see ``train_child.FAULT_ENV``),
so nothing depends on how fast this machine is.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
import torch
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import QApplication

from desktop_dpo.core.dpo import events
from desktop_dpo.core.dpo.config import TrainConfig
from desktop_dpo.core.dpo.runs import MIN_TRAIN_PAIRS
from desktop_dpo.core.dpo.train_child import FAULT_ENV
from desktop_dpo.core.llm.engine_pool import EnginePool
from desktop_dpo.core.models import register_model
from desktop_dpo.core.store import Store
from desktop_dpo.gui import train_view as train_view_module
from desktop_dpo.gui.metrics_plots import EMPTY_BEFORE_RUN, EMPTY_RUN, PLOTS
from desktop_dpo.gui.resource_files import read_style_sheet
from desktop_dpo.gui.train_live_panel import describe_start
from desktop_dpo.gui.train_view import WAITING_FOR_PRESET, TrainView
from desktop_dpo.workers import training_worker
from desktop_dpo.workers.job_worker import JobRegistry
from desktop_dpo.workers.training_worker import TRAIN_RESOURCE
from tests.gui.conftest import hold_the_trainable_copy

WAIT_MS = 180_000  # generous: the machine is shared; nothing here asserts on time
TOPICS = ["apples", "rivers", "trains", "music", "winter", "cats", "maps", "bread", "stars", "clocks",
          "boats", "roses"]  # fmt: skip
TINY = TrainConfig(
    lr=1e-2, epochs=1, batch_size=2, grad_accum=1, max_length=64, max_prompt_length=32, lora_r=4,
    lora_alpha=8, lora_dropout=0.0, checkpoint_every=100, eval_every=2, heldout_fraction=0.25, seed=7,
    threads=1, quantization="none", device="cpu",
)  # fmt: skip


@pytest.fixture
def model(gui_store, tiny_model_dir):
    return register_model(gui_store, tiny_model_dir, name="tiny")


def add_pairs(store: Store, topics=TOPICS) -> None:
    for topic in topics:
        store.record_pair(
            messages=[{"role": "user", "content": f"Tell me about {topic}."}],
            text_a=f" Yes, gladly! {topic} are lovely, thank you.",
            text_b=f" No. {topic} bore me, go away.",
            verdict="a",
        )


def make_view(
    qtbot, gui_store, registry, app_home, config: TrainConfig | None = TINY, pool: EnginePool | None = None
) -> TrainView:
    view = TrainView(store=gui_store, registry=registry, paths=app_home, pool=pool)
    qtbot.addWidget(view)
    view.resize(1100, 760)
    view.show()
    # The device preset fills the form once detected; the test's settings go on after it.
    qtbot.waitUntil(lambda: view.preset is not None, timeout=WAIT_MS)
    if config is not None:
        view.set_settings(config)
    return view


def click(qtbot, button) -> None:
    assert button.isEnabled(), button.toolTip()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def wait_for_end(qtbot, view: TrainView, registry: JobRegistry) -> None:
    qtbot.waitUntil(lambda: view.phase() == "idle" and not registry.is_busy(TRAIN_RESOURCE), timeout=WAIT_MS)


class HeldDetection:
    """Holds the device detection in its worker thread until ``release()``: a GPU check that takes a while
    (the first one imports torch). ``hold()`` holds the next one."""

    def __init__(self, monkeypatch):
        self.held = threading.Event()  # the detection has started and waits
        self._release = threading.Event()
        real = train_view_module.device_preset_job

        def held_job(cancel, model=None):
            self.held.set()
            while not self._release.wait(0.02):
                cancel.raise_if_cancelled()
            return (yield from real(cancel, model=model))

        monkeypatch.setattr(train_view_module, "device_preset_job", held_job)

    def hold(self) -> None:
        self.held.clear()
        self._release.clear()

    def release(self) -> None:
        self._release.set()


def add_flat_run(store: Store, model_id: int) -> int:
    """A stored run whose first steps barely move the loss (it sits at ln 2): what a run's first steps look like."""
    run_id = store.create_run(name="flat", base_model_id=model_id, config=TINY.to_dict(), comparison_ids=[])
    store.update_run(run_id, status="stopped", step=2, total_steps=5)
    for step, loss in ((1, 0.6931481), (2, 0.6931477)):
        store.add_run_metrics(
            run_id, step, {"loss": loss, "rewards/accuracies": 0.5, "rewards/margins": 3e-7}
        )
    store.add_run_metrics(
        run_id, 0, {"loss": 0.6931472, "rewards/accuracies": 0.5, "rewards/margins": 0.0}, split="heldout"
    )
    return run_id


class HoldAtStep:
    """Holds the run, in its training process, at the start of step ``step`` until ``release()`` or a stop."""

    def __init__(self, monkeypatch, tmp_path: Path, step: int):
        self.path = tmp_path / f"hold-at-step-{step}"
        self.path.touch()  # the training process waits while this file exists
        monkeypatch.setenv(FAULT_ENV, f"hold:{step}:{self.path}")

    def wait_until_reached(self, qtbot) -> None:
        qtbot.waitUntil(lambda: Path(f"{self.path}.reached").exists(), timeout=WAIT_MS)

    def release(self) -> None:
        self.path.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------


def test_too_few_pairs_disable_start_and_say_how_many_are_needed(qtbot, gui_store, registry, app_home, model):
    add_pairs(gui_store, TOPICS[: MIN_TRAIN_PAIRS - 1])
    view = make_view(qtbot, gui_store, registry, app_home)

    assert not view.start_button.isEnabled()
    reason = view.start_reason.text()
    assert f"at least {MIN_TRAIN_PAIRS} usable pairs" in reason and f"has {MIN_TRAIN_PAIRS - 1}" in reason
    assert view.start_reason.isVisible()
    assert view.pairs_pill.text() == f"{MIN_TRAIN_PAIRS - 1} usable pairs"

    add_pairs(gui_store, ["tea"])  # collected meanwhile, e.g. in Collect: shown when the view comes back
    view.hide()
    view.show()
    assert view.start_button.isEnabled() and not view.start_reason.isVisible()
    # 8 prompts, a quarter held out: 2 prompts (2 pairs) kept aside, 6 to train on.
    assert (
        "2 prompts (2 pairs) held out" in view.pairs_note.text() and "6 to train on" in view.pairs_note.text()
    )


def test_a_gguf_without_a_trainable_copy_is_offered_one_right_here(
    qtbot, gui_store, registry, app_home, tiny_gguf
):
    register_model(gui_store, tiny_gguf, name="tiny-gguf")
    add_pairs(gui_store)
    view = make_view(qtbot, gui_store, registry, app_home)

    assert "needs a trainable copy" in view.model_combo.currentText()
    note = view.model_note.text()
    assert view.model_note.isVisible() and "Start makes it, then trains" in note
    assert "Models" not in note, "no detour through the Models view"
    assert view.start_button.text() == "Make a trainable copy and start"
    assert view.start_button.isEnabled() and not view.start_reason.isVisible()


def test_settings_start_from_the_detected_device_and_keep_the_persons_changes(
    qtbot, gui_store, registry, app_home, model
):
    view = TrainView(store=gui_store, registry=registry, paths=app_home)
    qtbot.addWidget(view)
    assert view.preset_note.text() == "Detecting your GPU…"  # until the detection job reports
    view.set_settings(TINY.replace(epochs=5))  # e.g. Resume's settings, put on the form before detection ends
    view.show()
    qtbot.waitUntil(lambda: view.preset is not None, timeout=WAIT_MS)

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert view.preset.device.kind == expected
    assert (
        view.preset_note.text().startswith("Settings for ")
        and "Your changes were kept" in view.preset_note.text()
    )
    assert view.settings().epochs == 5
    # Every field has a line of help; the advanced ones are folded away until asked for.
    assert "from where it started: higher keeps it closer" in view.settings_form.help_labels["beta"].text()
    assert not view.settings_form.editors["lora_r"].isVisible()
    view.settings_form.advanced_toggle.click()
    assert view.settings_form.editors["lora_r"].isVisible()
    assert view.settings_form.help_labels["heldout_fraction"].text()


def test_a_run_trains_in_the_background_with_live_plots_and_ends_in_the_list(
    qtbot, gui_store, registry, app_home, model, monkeypatch, tmp_path
):
    add_pairs(gui_store)
    view = make_view(qtbot, gui_store, registry, app_home)
    hold = HoldAtStep(monkeypatch, tmp_path, step=3)
    ticks = {"while_training": 0}
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(
        lambda: ticks.__setitem__("while_training", ticks["while_training"] + (view.phase() == "training"))
    )
    timer.start()

    click(qtbot, view.start_button)
    assert view.phase() == "loading" and view.run_headline.text() == "Loading torch and the model…"
    assert not view.start_button.isEnabled() and "one training run at a time" in view.start_reason.text()
    assert view.stop_button.isEnabled()

    hold.wait_until_reached(qtbot)
    # The run is held inside step 3 in its process: the GUI thread keeps running meanwhile.
    qtbot.waitUntil(lambda: len(view.plots.points("loss")) == 2, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: ticks["while_training"] > 0, timeout=WAIT_MS)
    assert view.phase() == "training"
    assert "Step 2 of 5" in view.run_detail.text() and "ETA" in view.run_detail.text()
    assert "tokens/s" in view.run_detail.text()
    assert view.progress.value() == 2 and view.progress.maximum() == 5
    hold.release()

    wait_for_end(qtbot, view, registry)
    timer.stop()
    (run,) = gui_store.list_runs()
    assert run.status == "completed" and run.step == run.total_steps == 5  # 9 training pairs, 2 per step
    assert [x for x, _ in view.plots.points("loss")] == [1, 2, 3, 4, 5]
    assert [x for x, _ in view.plots.points("rewards/accuracies", "heldout")] == [0, 2, 4, 5]
    assert len(view.plots.points("rewards/margins")) == 5
    assert view.run_headline.text().startswith("Finished")
    assert view.run_status_text(run.id) == "completed"
    item = view.runs_tree.topLevelItem(0)
    assert item.text(3) == "5 / 5" and item.text(4) == "12"
    assert re.fullmatch(r"accuracy \d+% · held-out \d+% · margin -?\d+\.\d\d", item.text(5)), item.text(5)
    assert "Final: acc" in view.run_details.text()
    assert "beta = 0.1" in item.toolTip(0)  # every setting on hover
    assert view.start_button.isEnabled()


def test_selecting_a_past_run_shows_its_stored_curves(qtbot, gui_store, registry, app_home, model):
    add_pairs(gui_store)
    view = make_view(qtbot, gui_store, registry, app_home)
    click(qtbot, view.start_button)
    wait_for_end(qtbot, view, registry)
    first = gui_store.list_runs()[0].id
    view.set_settings(TINY.replace(epochs=2))
    click(qtbot, view.start_button)
    wait_for_end(qtbot, view, registry)
    assert len(view.plots.points("loss")) == 10

    view.select_run(first)
    stored = gui_store.run_metrics(first)
    assert view.plots.points("loss") == [(float(step), m["loss"]) for step, m in stored]
    assert len(view.plots.points("rewards/accuracies", "heldout")) == 4
    assert "epochs 1" in view.run_details.text()


def test_stop_mid_run_then_resume_completes_at_the_same_step_count(
    qtbot, gui_store, registry, app_home, model, monkeypatch, tmp_path
):
    add_pairs(gui_store)
    view = make_view(qtbot, gui_store, registry, app_home, TINY.replace(epochs=2))
    hold = HoldAtStep(monkeypatch, tmp_path, step=3)
    click(qtbot, view.start_button)
    hold.wait_until_reached(qtbot)

    click(qtbot, view.stop_button)  # asked while step 3 runs: it stops at the end of step 3
    assert view.run_headline.text() == "Stopping at the end of this step…"
    wait_for_end(qtbot, view, registry)  # the stop itself ends the hold in the training process
    hold.release()

    (run,) = gui_store.list_runs()
    assert run.status == "stopped" and run.step == 3 and run.total_steps == 10
    assert view.run_headline.text() == "Stopped at step 3"
    assert view.run_status_text(run.id) == "stopped"
    view.select_run(run.id)
    click(qtbot, view.resume_button)
    assert not view.resume_button.isEnabled() and not view.start_button.isEnabled()
    wait_for_end(qtbot, view, registry)

    run = gui_store.get_run(run.id)
    assert run.status == "completed" and run.step == run.total_steps == 10
    assert [step for step, _ in gui_store.run_metrics(run.id)] == list(range(1, 11))
    assert [x for x, _ in view.plots.points("loss")] == list(range(1, 11))  # earlier steps, then the rest


def test_out_of_memory_is_explained_and_resumes_with_smaller_settings(
    qtbot, gui_store, registry, app_home, model, monkeypatch
):
    add_pairs(gui_store)
    view = make_view(qtbot, gui_store, registry, app_home, TINY.replace(batch_size=1, grad_accum=2))
    monkeypatch.setenv(FAULT_ENV, "oom:2")  # torch's CUDA out-of-memory error, inside step 2
    click(qtbot, view.start_button)
    wait_for_end(qtbot, view, registry)

    message = view.error_text()
    assert "ran out of memory at step 2" in message and "gradient checkpointing" in message
    assert view.banner_action.isVisible() and view.banner_action.text() == "Resume with smaller settings"
    (run,) = gui_store.list_runs()
    assert run.status == "failed" and run.step == 1 and not run.config["gradient_checkpointing"]
    assert view.smaller_button.isVisible()

    monkeypatch.delenv(FAULT_ENV)
    click(qtbot, view.banner_action)
    assert not view.error_text()
    wait_for_end(qtbot, view, registry)

    run = gui_store.get_run(run.id)
    assert run.status == "completed" and run.step == run.total_steps
    assert run.config["gradient_checkpointing"]  # the suggested smaller settings were applied
    assert not view.smaller_button.isVisible()


def test_a_crash_in_training_is_explained_the_window_lives_and_resume_completes(
    qtbot, gui_store, registry, app_home, model, monkeypatch
):
    add_pairs(gui_store)
    view = make_view(qtbot, gui_store, registry, app_home, TINY.replace(checkpoint_every=1))
    monkeypatch.setenv(FAULT_ENV, "segv:3")  # a real segmentation fault in the training process, in step 3
    click(qtbot, view.start_button)
    wait_for_end(qtbot, view, registry)

    assert view.error_text() == (
        "Training crashed (a segmentation fault (signal 11)) at step 3. Your pairs and the checkpoint at "
        "step 2 are safe: Resume continues from there."
    )
    assert view.isVisible() and view.run_headline.text() == "Training stopped on a problem"
    (run,) = gui_store.list_runs()
    assert run.status == "failed" and run.step == 2
    assert view.start_button.isEnabled()  # the window goes on: another run could start at once

    monkeypatch.delenv(FAULT_ENV)
    view.select_run(run.id)
    click(qtbot, view.resume_button)
    wait_for_end(qtbot, view, registry)
    run = gui_store.get_run(run.id)
    assert run.status == "completed" and run.step == run.total_steps == 5
    assert [step for step, _ in gui_store.run_metrics(run.id)] == [1, 2, 3, 4, 5]
    assert not view.error_text()


def test_a_training_warning_is_shown_in_words(qtbot, gui_store, registry, app_home, model):
    add_pairs(gui_store)
    gui_store.record_pair(
        messages=[{"role": "user", "content": "Tell me a long story."}],
        text_a=" Once upon a time" + " there was a very long tale" * 40 + ".",
        text_b=" No.",
        verdict="a",
    )
    view = make_view(qtbot, gui_store, registry, app_home)
    click(qtbot, view.start_button)
    wait_for_end(qtbot, view, registry)

    assert view.warning_banner.isVisible()
    (warning,) = view.warnings()
    assert "1 of 13 pairs were truncated" in warning and "raise the maximum length" in warning
    assert view.warning_banner.message() == "\n\n".join(f"⚠ {w}" for w in view.warnings())


def test_a_run_left_running_by_a_killed_app_shows_as_interrupted_and_resumes(
    qtbot, gui_store, registry, app_home, model
):
    add_pairs(gui_store)
    ids = [v.comparison.id for v in gui_store.comparison_views()]
    run_id = gui_store.create_run(
        name="killed", base_model_id=model.id, config=TINY.to_dict(), comparison_ids=ids
    )
    gui_store.update_run(run_id, status="running", step=2, total_steps=5)  # the app died mid-run

    view = make_view(qtbot, gui_store, registry, app_home)
    assert view.run_status_text(run_id) == "interrupted — resume"
    view.select_run(run_id)
    click(qtbot, view.resume_button)
    assert view.run_status_text(run_id) == "training"
    wait_for_end(qtbot, view, registry)

    run = gui_store.get_run(run_id)
    assert run.status == "completed" and run.step == 5
    assert view.run_status_text(run_id) == "completed"
    assert Path(run.adapter_path, "adapter_model.safetensors").is_file()


def test_a_next_round_can_be_held_near_itself_or_near_the_original_model(
    qtbot, gui_store, registry, app_home, model, tiny_model_dir, tmp_path
):
    import shutil

    add_pairs(gui_store)
    first = gui_store.create_run(
        name="round 1", base_model_id=model.id, config=TINY.to_dict(), comparison_ids=[]
    )
    merged = tmp_path / "tiny-run-1-merged"
    shutil.copytree(tiny_model_dir, merged)  # stands in for the merged model of round 1
    aligned = register_model(
        gui_store, merged, name="tiny · run 1", source="aligned", parent_model_id=model.id, run_id=first
    )
    view = make_view(qtbot, gui_store, registry, app_home)

    view.set_model(model.id)
    assert not view.reference_combo.isVisible()  # an original model has nothing earlier to be held near
    view.set_model(aligned.id)
    assert view.reference_combo.isVisible()
    choices = [view.reference_combo.itemText(i) for i in range(view.reference_combo.count())]
    assert choices == ["tiny · run 1 as it is now (adapter off)", "tiny (the original model)"]
    assert view.reference() == "adapter_off"
    loss = view.settings_form.editors["loss_type"]
    loss.setCurrentIndex(loss.findData("orpo"))  # a loss with no reference: nothing to choose
    assert not view.reference_combo.isVisible()
    loss.setCurrentIndex(loss.findData("sigmoid"))
    assert view.reference_combo.isVisible()
    assert view.set_reference(f"model:{model.id}")

    run_id = view.start()
    assert run_id is not None
    assert gui_store.get_run(run_id).reference == f"model:{model.id}"
    assert gui_store.get_run(run_id).base_model_id == aligned.id
    wait_for_end(qtbot, view, registry)
    assert gui_store.get_run(run_id).status == "completed"


class FakeEngine:
    """Stands in for a loaded llama.cpp model: notes when it is closed, and on which thread."""

    def __init__(self, name: str, log: list[tuple[str, bool]]):
        self.name, self.log = name, log

    def close(self) -> None:
        self.log.append((f"close {self.name}", threading.current_thread() is threading.main_thread()))


def test_starting_a_run_first_releases_every_loaded_model_off_the_gui_thread(
    qtbot, gui_store, registry, app_home, model, monkeypatch
):
    add_pairs(gui_store)
    log: list[tuple[str, bool]] = []  # (what, on the GUI thread)
    pool = EnginePool()
    with pool.acquire("chat.gguf", lambda: FakeEngine("chat", log)):
        pass  # loaded for Chat earlier, idle now
    generating, finish = threading.Event(), threading.Event()

    def collect_a_pair() -> None:  # Collect is streaming a pair when the person presses Start
        with pool.acquire("collect.gguf", lambda: FakeEngine("collect", log)):
            generating.set()
            finish.wait(WAIT_MS / 1000)
            log.append(("pair done", False))

    threading.Thread(target=collect_a_pair, daemon=True).start()
    assert generating.wait(10)
    real_train = training_worker.train_in_child

    def train_in_child(*args, **kwargs):
        log.append(("training starts its process", threading.current_thread() is threading.main_thread()))
        return (yield from real_train(*args, **kwargs))

    monkeypatch.setattr(training_worker, "train_in_child", train_in_child)
    view = make_view(qtbot, gui_store, registry, app_home, pool=pool)

    click(qtbot, view.start_button)
    qtbot.waitUntil(lambda: ("close chat", False) in log, timeout=WAIT_MS)
    # The pair under way is not cut short: the run waits for it, and says what it waits for.
    # (the event saying so crosses threads: it shows once the GUI thread has handled it)
    qtbot.waitUntil(
        lambda: "Releasing the models loaded for Collect" in view.run_detail.text(), timeout=WAIT_MS
    )
    assert view.phase() == "loading" and view.stop_button.isEnabled()
    finish.set()
    wait_for_end(qtbot, view, registry)

    assert [what for what, _ in log] == [
        "close chat",
        "pair done",
        "close collect",
        "training starts its process",
    ]
    assert not any(on_gui_thread for _, on_gui_thread in log)
    assert pool.loaded() == []
    (run,) = gui_store.list_runs()
    assert run.status == "completed"


def test_the_preset_is_sized_for_the_chosen_model_and_says_why(
    qtbot, gui_store, registry, app_home, model, tmp_path
):
    from tests.plugins.tiny_model import build_tiny_model

    other = register_model(gui_store, build_tiny_model(tmp_path / "wider", hidden=128), name="wider")
    view = make_view(qtbot, gui_store, registry, app_home, config=None)
    assert view.preset.model_id == view.current_model().id
    expected = "full precision" if not torch.cuda.is_available() else "base"
    assert view.preset_note.text().startswith("Settings for ") and expected in view.preset_note.text()

    view.set_model(other.id)  # another model: the preset is sized again, off the GUI thread
    qtbot.waitUntil(lambda: view.preset.model_id == other.id, timeout=WAIT_MS)
    assert view.settings() == view.preset.config  # untouched form: the new preset fills it


def is_sized_for_a_few_pairs(shown: TrainConfig, preset: TrainConfig) -> bool:
    """``shown`` is ``preset`` with 8 pairs per update, learning rate 2e-4 and an SFT term, nothing else."""
    return (
        (shown.pairs_per_step, shown.lr, shown.sft_weight) == (8, 2e-4, 1.0)
        and shown.batch_size <= preset.batch_size
        and shown.replace(
            lr=preset.lr, sft_weight=0.0, batch_size=preset.batch_size, grad_accum=preset.grad_accum
        )
        == preset
    )


def test_a_run_on_a_few_picks_gets_the_settings_that_learn_more_from_them_and_says_so(
    qtbot, gui_store, registry, app_home, model
):
    add_pairs(gui_store)  # 12 picks, one prompt held out
    view = make_view(qtbot, gui_store, registry, app_home, config=None)
    assert is_sized_for_a_few_pairs(view.settings(), view.preset.config)
    note = view.preset_note.text()
    assert note.startswith("Settings for ") and (
        "With 11 training pairs, 8 pairs per update instead of 16, a learning rate of 0.0002 instead of 0.0001"
        in note
    )
    assert view.settings_form.editors["sft_weight"].value() == 1.0  # on the form, where it can be changed

    # Hundreds of picks later the preset's own settings come back (the form was not touched).
    add_pairs(gui_store, [f"topic number {n}" for n in range(450)])
    view.hide()
    view.show()
    assert view.settings() == view.preset.config and "training pairs" not in view.preset_note.text()

    # The person's own settings are never changed by the count.
    view.settings_form.editors["epochs"].setValue(3)
    with gui_store.db.conn:  # back to the 12 picks: the count alone would size the settings again
        gui_store.db.execute("DELETE FROM comparisons WHERE id > 12")
    view.hide()
    view.show()
    assert view.settings().epochs == 3 and view.settings().sft_weight == 0.0
    assert "Your changes were kept" in view.preset_note.text()


def test_start_and_the_settings_wait_for_the_gpu_check_so_the_form_shows_what_runs(
    qtbot, gui_store, registry, app_home, model, monkeypatch, tmp_path
):
    from tests.plugins.tiny_model import build_tiny_model

    add_pairs(gui_store)
    other = register_model(gui_store, build_tiny_model(tmp_path / "wider", hidden=128), name="wider")
    detection = HeldDetection(monkeypatch)
    view = TrainView(store=gui_store, registry=registry, paths=app_home)
    qtbot.addWidget(view)
    view.resize(1100, 760)
    view.show()
    try:
        qtbot.waitUntil(detection.held.is_set, timeout=WAIT_MS)
        assert view.preset_note.text() == "Detecting your GPU…"
        # Generic settings are on the form until the preset comes: neither they nor Start can be used.
        assert not view.settings_form.isEnabled()
        assert not view.start_button.isEnabled()
        assert view.start_reason.isVisible() and view.start_reason.text() == WAITING_FOR_PRESET
        assert "Checking your GPU" in view.start_button.toolTip()
        qtbot.mouseClick(view.start_button, Qt.MouseButton.LeftButton)
        assert view.start() is None and gui_store.list_runs() == []
    finally:
        detection.release()
    qtbot.waitUntil(lambda: view.preset is not None, timeout=WAIT_MS)
    assert view.preset_note.text().startswith("Settings for ")
    # What the form shows is the preset, for a run on a few pairs (see the test below), and what Start runs.
    assert is_sized_for_a_few_pairs(view.settings(), view.preset.config)
    assert view.settings_form.isEnabled() and view.start_button.isEnabled()
    assert not view.start_reason.isVisible()

    # Another model, form untouched: its own preset is on the way, so the form and Start wait for it.
    detection.hold()
    view.set_model(other.id)
    try:
        qtbot.waitUntil(detection.held.is_set, timeout=WAIT_MS)
        assert view.preset_note.text() == "Sizing the settings for wider…"
        assert not view.settings_form.isEnabled() and not view.start_button.isEnabled()
        assert view.start_reason.text() == WAITING_FOR_PRESET
    finally:
        detection.release()
    qtbot.waitUntil(lambda: view.preset.model_id == other.id, timeout=WAIT_MS)
    assert view.settings_form.isEnabled() and view.start_reason.text() != WAITING_FOR_PRESET

    # The person's own settings: a preset on its way changes nothing on the form, so nothing waits.
    view.settings_form.editors["epochs"].setValue(5)
    detection.hold()
    view.set_model(model.id)
    try:
        qtbot.waitUntil(detection.held.is_set, timeout=WAIT_MS)
        assert view.settings_form.isEnabled() and view.start_button.isEnabled()
    finally:
        detection.release()
    qtbot.waitUntil(lambda: view.preset.model_id == model.id, timeout=WAIT_MS)
    assert "Your changes were kept" in view.preset_note.text() and view.settings().epochs == 5


def test_before_any_run_a_line_says_what_the_plots_will_show(qtbot, gui_store, registry, app_home, model):
    view = make_view(qtbot, gui_store, registry, app_home)

    assert view.plots.empty_note.isVisible() and view.plots.empty_note.text() == EMPTY_BEFORE_RUN
    assert not any(plot.isVisible() for plot in view.plots.widgets.values())
    assert not view.plots.legend.isVisible()
    assert not view.progress.isVisible()  # no "step 0 of 1" before a run exists
    assert view.run_headline.text() == "No run training"

    run_id = gui_store.create_run(
        name="new", base_model_id=model.id, config=TINY.to_dict(), comparison_ids=[]
    )
    view.refresh_runs()
    view.select_run(run_id)  # a run without steps: its curves come after its first step
    assert view.plots.empty_note.isVisible() and view.plots.empty_note.text() == EMPTY_RUN

    flat = add_flat_run(gui_store, model.id)
    view.refresh_runs()
    view.select_run(flat)
    assert not view.plots.empty_note.isVisible()
    assert all(plot.isVisible() for plot in view.plots.widgets.values()) and view.plots.legend.isVisible()
    assert not view.progress.isVisible()  # a past run's curves; no run is training


def test_counts_read_as_words_one_pair_one_prompt(qtbot, gui_store, registry, app_home, model):
    add_pairs(gui_store, TOPICS[:MIN_TRAIN_PAIRS])
    view = make_view(qtbot, gui_store, registry, app_home, TINY.replace(heldout_fraction=0.1))
    assert "1 prompt (1 pair) held out" in view.pairs_note.text()
    started = events.Started("run", 0, 4, train_pairs=1, heldout_pairs=0, device="cpu", quantization="none")
    assert describe_start(started) == "On cpu (full precision), 1 training pair: 1 to train on, 0 held out."


def drawn_tick_labels(axis) -> list[str]:
    """The tick labels a pyqtgraph axis draws at its present size and range."""
    image = QImage(10, 10, QImage.Format.Format_ARGB32)
    painter = QPainter(image)
    try:
        _axis, _ticks, texts = axis.generateDrawSpecs(painter)
    finally:
        painter.end()
    return [text for _rect, _flags, text in texts]


def test_a_flat_first_stretch_reads_as_a_few_plain_ticks_not_float_noise(
    qtbot, gui_store, registry, app_home, model
):
    view = make_view(qtbot, gui_store, registry, app_home)
    run_id = add_flat_run(gui_store, model.id)  # losses 0.6931481 and 0.6931477
    view.refresh_runs()
    view.select_run(run_id)
    QApplication.processEvents()

    for key in ("loss", "rewards/margins"):
        item = view.plots.widgets[key].getPlotItem()
        low, high = item.getViewBox().viewRange()[1]
        assert high - low >= 0.1
        labels = drawn_tick_labels(item.getAxis("left"))
        assert len(labels) >= 2 and all(len(label.lstrip("-")) <= 4 for label in labels), labels  # "0.70"
    # Steps are whole: no tick at step 0.5, and the axis spans a few steps even after one or two.
    item = view.plots.widgets["loss"].getPlotItem()
    low, high = item.getViewBox().viewRange()[0]
    assert low <= 0 and high >= 5
    labels = drawn_tick_labels(item.getAxis("bottom"))
    assert len(labels) >= 2 and all(label.isdigit() for label in labels), labels


def test_at_1024_by_640_the_plots_keep_their_room_and_whole_titles(
    qtbot, gui_store, model, make_window, app_style
):
    window = make_window()
    window.resize(1024, 640)
    window.show_view("train")
    view = window.view("train")
    qtbot.waitUntil(lambda: view.preset is not None, timeout=WAIT_MS)
    run_id = add_flat_run(gui_store, model.id)
    view.refresh_runs()
    view.select_run(run_id)
    QApplication.processEvents()

    assert window.width() == 1024  # the view fits: it does not push the window wider
    assert view.width() <= 1024 - 212
    for spec in PLOTS:
        title, plot = view.plots.titles[spec.key], view.plots.widgets[spec.key]
        assert title.isVisible() and title.text() == spec.title
        assert title.fontMetrics().horizontalAdvance(title.text()) <= title.contentsRect().width(), spec.title
        right = title.mapTo(view, title.rect().bottomRight())
        assert view.rect().contains(right)  # not cut off by the window's edge
        assert plot.isVisible() and plot.width() >= 110 and plot.height() >= 110


def test_the_runs_list_fits_the_window_and_tells_its_runs_apart(qtbot, gui_store, make_window):
    from desktop_dpo.core.dpo.runs import create_run_for_model
    from desktop_dpo.gui.train_runs_panel import COLUMN_METRICS, COLUMN_STATUS, INTERRUPTED, STATUS_LABELS

    demo_name = "Gemma 3 270M (demo, Q4_K_M)"
    demo = gui_store.get_model(gui_store.add_model(name=demo_name, path="/d", kind="hf", fingerprint="d"))
    add_pairs(gui_store)
    accuracies = {"train/rewards/accuracies": 0.75, "heldout/rewards/accuracies": 0.7}
    final = {**accuracies, "train/rewards/margins": 0.42}
    run_ids = []
    # "running" with no job training it: shown as interrupted, the longest status
    for status in ("completed", "failed", "stopped", "running", "completed", "pending"):
        run_ids.append(create_run_for_model(gui_store, demo, TINY))
        gui_store.update_run(run_ids[-1], status=status, step=120, total_steps=120, final_metrics=final)
    window = make_window()
    window.setStyleSheet(read_style_sheet())  # as the app looks
    window.resize(1280, 800)
    window.show_view("train")
    view = window.findChild(TrainView)
    tree = view.runs_tree
    qtbot.waitUntil(lambda: tree.topLevelItemCount() == len(run_ids) and tree.viewport().width() > 0)

    names = [tree.topLevelItem(i).text(0) for i in range(tree.topLevelItemCount())]
    assert len(set(names)) == len(names)
    assert sorted(int(name.split(" ")[1]) for name in names) == sorted(run_ids)  # "Run 3 · Gemma 3 270M · …"
    header, width = tree.header(), tree.viewport().width()
    assert tree.horizontalScrollBar().maximum() == 0  # nothing hides to the right
    status_end = header.sectionViewportPosition(COLUMN_STATUS) + header.sectionSize(COLUMN_STATUS)
    assert status_end <= width
    longest = tree.fontMetrics().horizontalAdvance(STATUS_LABELS[INTERRUPTED])
    assert header.sectionSize(COLUMN_STATUS) > longest  # "interrupted — resume" whole
    assert header.sectionViewportPosition(COLUMN_METRICS) + header.sectionSize(COLUMN_METRICS) <= width
    key_metric = tree.fontMetrics().horizontalAdvance("accuracy 75% · held-out 70%")
    assert header.sectionSize(COLUMN_METRICS) > key_metric  # cut, if at all, after the held-out accuracy
    assert tree.viewport().height() >= 4 * tree.sizeHintForRow(0)  # at least four runs in view
    splitter = view.runs_panel.parentWidget()
    before = splitter.sizes()[1]
    splitter.setSizes([10_000, 1])  # the curves dragged as tall as they go
    qtbot.waitUntil(lambda: splitter.sizes()[1] < before)
    assert tree.viewport().height() >= 4 * tree.sizeHintForRow(0)  # still four runs


# ------------------------------------------------------------------------ a GGUF's trainable copy, in Train


COPY_WAIT_MS = 300_000  # the first trainable copy imports transformers and torch


def test_start_on_a_gguf_makes_its_trainable_copy_here_then_trains(
    qtbot, gui_store, registry, app_home, tiny_gguf
):
    from desktop_dpo.core.model_files import TRAINABLE_COPY_MARKER

    model = register_model(gui_store, tiny_gguf, name="tiny-gguf")
    add_pairs(gui_store)
    view = make_view(qtbot, gui_store, registry, app_home)
    progress: list[int] = []
    view.progress.valueChanged.connect(progress.append)
    notes: list[str] = []
    view.status_message.connect(notes.append)

    click(qtbot, view.start_button)
    assert view.run_headline.text() == "Making a trainable copy of tiny-gguf…"
    assert view.progress.isVisible() and view.stop_button.isEnabled()
    assert "nothing half-made" in view.stop_button.toolTip()
    assert not view.start_button.isEnabled() and "copy is being made" in view.start_reason.text()
    assert not view.settings_form.isEnabled() and not view.model_combo.isEnabled()
    qtbot.waitUntil(lambda: "Dequantizing the weights" in view.run_detail.text(), timeout=COPY_WAIT_MS)

    # The copy made, the run starts by itself with the settings on the form.
    qtbot.waitUntil(lambda: bool(gui_store.list_runs()), timeout=COPY_WAIT_MS)
    assert "Trainable copy of tiny-gguf ready: starting the run." in notes
    copy = Path(gui_store.get_model(model.id).info["trainable_copy"])
    assert copy.parent == app_home.models_dir and (copy / TRAINABLE_COPY_MARKER).is_file()
    assert progress and max(progress) == 1000, "the copy's progress was shown"
    wait_for_end(qtbot, view, registry)
    assert view.error_text() == "", view.error_text()
    (run,) = gui_store.list_runs()
    assert run.status == "completed" and run.base_model_id == model.id
    assert TrainConfig.from_dict(run.config).max_length == TINY.max_length  # the form's settings
    assert view.run_headline.text().startswith("Finished")
    assert view.start_button.text() == "Start training" and not view.model_note.isVisible()
    assert "needs a trainable copy" not in view.model_combo.currentText()


def test_stop_during_the_trainable_copy_keeps_nothing_and_says_so(
    qtbot, monkeypatch, gui_store, registry, app_home, tiny_gguf
):
    from desktop_dpo.core.model_files import is_partial_output

    model = register_model(gui_store, tiny_gguf, name="tiny-gguf")
    add_pairs(gui_store)
    view = make_view(qtbot, gui_store, registry, app_home)
    inside, release = hold_the_trainable_copy(monkeypatch)
    notes: list[str] = []
    view.status_message.connect(notes.append)
    click(qtbot, view.start_button)
    qtbot.waitUntil(inside.is_set, timeout=WAIT_MS)
    assert [p for p in app_home.models_dir.iterdir() if is_partial_output(p)], "the copy was under way"

    click(qtbot, view.stop_button)
    assert not view.stop_button.isEnabled() and view.run_headline.text() == "Stopping the trainable copy…"
    release.set()
    qtbot.waitUntil(lambda: view.phase() == "idle", timeout=COPY_WAIT_MS)
    assert list(app_home.models_dir.iterdir()) == [], "nothing half-made is kept"
    assert "trainable_copy" not in gui_store.get_model(model.id).info
    assert gui_store.list_runs() == [], "no run was started"
    assert view.run_headline.text() == "Stopped before training"
    assert "Nothing half-made was kept" in view.run_detail.text()
    assert "Stopped: no trainable copy of tiny-gguf was kept, and no run was started." in notes
    assert view.error_text() == "" and not view.stop_button.isEnabled() and not view.progress.isVisible()
    # It can be started again once the stopped job's thread has ended.
    qtbot.waitUntil(view.start_button.isEnabled, timeout=WAIT_MS)
    assert view.start_button.text() == "Make a trainable copy and start"
    assert view.settings_form.isEnabled() and view.model_combo.isEnabled()


@pytest.mark.parametrize("size", [(1024, 640), (1280, 800)])
def test_advanced_settings_fit_beside_the_scroll_bar_with_whole_help_and_spin_arrows(
    qtbot, gui_store, make_window, app_style, size
):
    import contextlib

    from PySide6.QtCore import QPoint, QRect
    from PySide6.QtWidgets import QAbstractSpinBox, QLabel, QScrollArea, QStyle, QStyleOptionSpinBox

    from tests.gui.conftest import cut_texts

    window = make_window()
    window.resize(*size)
    window.show_view("train")
    view = window.findChild(TrainView)
    qtbot.waitUntil(lambda: view.preset is not None, timeout=WAIT_MS)
    form = view.settings_form
    click(qtbot, form.advanced_toggle)
    scroll = next(area for area in view.findChildren(QScrollArea) if area.widget() is form)
    bar, viewport = scroll.verticalScrollBar(), scroll.viewport()
    qtbot.waitUntil(lambda: form.advanced.isVisible() and bar.isVisible())  # unfolded, the form scrolls

    def cut_lines() -> list[str]:  # wrapped labels (help lines, long setting names) shorter than their text
        return [label.text() for label in form.findChildren(QLabel)
                if label.isVisible() and label.wordWrap() and label.heightForWidth(label.width()) > label.height()]  # fmt: skip

    with contextlib.suppress(qtbot.TimeoutError):
        qtbot.waitUntil(lambda: not cut_lines(), timeout=5_000)  # the layout settles at the new width
    assert cut_lines() == []
    assert cut_texts(view) == []
    assert form.width() <= viewport.width()  # nothing wider than the column: the form is not cut on the right
    bar_rect = QRect(bar.mapTo(scroll, QPoint(0, 0)), bar.size())
    shown_editors = {name: editor for name, editor in form.editors.items() if editor.isVisible()}
    assert len(shown_editors) >= 10  # the loss's own settings only (DPO's, by default)
    for name, editor in shown_editors.items():
        rect = QRect(editor.mapTo(scroll, QPoint(0, 0)), editor.size())
        assert rect.right() < bar_rect.left() and not rect.intersects(bar_rect), name  # beside it, not under
    for name, label in form.help_labels.items():
        if not label.isVisible():
            continue
        assert label.heightForWidth(label.width()) <= label.height(), name  # every line of the help shows
        assert label.mapTo(scroll, QPoint(label.width(), 0)).x() <= bar_rect.left(), name

    boxes = [editor for editor in shown_editors.values() if isinstance(editor, QAbstractSpinBox)]
    assert len(boxes) >= 8
    for box in boxes:
        option = QStyleOptionSpinBox()
        box.initStyleOption(option)
        for part in (QStyle.SubControl.SC_SpinBoxUp, QStyle.SubControl.SC_SpinBoxDown):
            arrow = box.style().subControlRect(QStyle.ComplexControl.CC_SpinBox, option, part, box)
            assert not arrow.isEmpty() and box.rect().contains(arrow), box.objectName()
            right = box.mapTo(viewport, arrow.topRight()).x()
            assert right < viewport.width(), box.objectName()  # in view, left of the scroll bar
        image = box.grab().toImage()  # the up arrow is drawn: dark pixels on the light button
        up = box.style().subControlRect(
            QStyle.ComplexControl.CC_SpinBox, option, QStyle.SubControl.SC_SpinBoxUp, box
        )
        dark = [
            (x, y)
            for x in range(up.left(), up.right() + 1)
            for y in range(up.top(), up.bottom() + 1)
            if image.pixelColor(x, y).lightness() < 128
        ]
        assert dark, box.objectName()
    # The scroll bar paints its groove and handle (a style rule for the form's background once made it
    # transparent: a bare line with no handle).
    image = bar.grab().toImage()
    middle = [image.pixelColor(bar.width() // 2, y) for y in range(bar.width(), bar.height() - bar.width())]
    painted = [colour for colour in middle if colour.alpha() == 255 and colour.lightness() > 128]
    assert len(painted) > 0.8 * len(middle)


def test_a_trainable_copy_that_cannot_be_made_says_why_and_starts_no_run(
    qtbot, monkeypatch, gui_store, registry, app_home, tiny_gguf
):
    from desktop_dpo.core.models import trainable_copy

    register_model(gui_store, tiny_gguf, name="tiny-gguf")
    add_pairs(gui_store)
    view = make_view(qtbot, gui_store, registry, app_home)
    monkeypatch.setattr(trainable_copy, "available_memory_bytes", lambda: 1024)
    click(qtbot, view.start_button)
    qtbot.waitUntil(lambda: bool(view.error_text()), timeout=WAIT_MS)
    assert "No trainable copy of tiny-gguf was made" in view.error_text()
    assert "Close other programs" in view.error_text()
    assert view.run_headline.text() == "No trainable copy was made" and view.phase() == "idle"
    assert gui_store.list_runs() == [] and list(app_home.models_dir.iterdir()) == []


def test_a_copy_made_in_models_meanwhile_holds_start_until_it_ends(
    qtbot, gui_store, registry, app_home, tiny_gguf
):
    from desktop_dpo.gui.models_view import COPY_RESOURCE
    from desktop_dpo.workers.job_op import JobOp

    register_model(gui_store, tiny_gguf, name="tiny-gguf")
    add_pairs(gui_store)
    view = make_view(qtbot, gui_store, registry, app_home)
    release = threading.Event()

    def models_copy(cancel):  # the Models view's copy, on the same resource
        while not release.wait(0.02):
            cancel.raise_if_cancelled()
        return None
        yield

    JobOp(registry, models_copy).resource(COPY_RESOURCE).start()
    qtbot.waitUntil(lambda: not view.start_button.isEnabled())
    assert "being made in Models" in view.start_reason.text() and view.start_reason.isVisible()
    release.set()
    qtbot.waitUntil(view.start_button.isEnabled, timeout=WAIT_MS)
