"""Sampling: our llama.cpp streaming path against its peers, on one GGUF model, load time excluded.

"Ours" is the path the app uses: ``SupervisedLlamaEngine``, llama.cpp in a supervised child process whose
events are pickled over a pipe to this process. The peer, llama-cpp-python's ``Llama``, runs in this process.

Arms (every response has a fixed length: end-of-generation tokens are ignored where the arm allows it):

(a) plumbing_ratio = our single streaming response's tokens/s (child process in the path) ÷ llama-cpp-python's
    own in-process ``Llama.create_completion`` on the same file, same context settings, same sampler
    settings and seed (its KV cache is reset before each call so it evaluates the prompt too, as ours does).
    Goal >= 0.9. Both draw the same tokens (same sampler chain): the script checks that the texts are
    identical.
(b) pair_ratio = time until both responses of a pair are complete ÷ time for one response alone (ours
    both, through the child). Goal <= 1.3.
(c) hf_ratio = our tokens/s ÷ ``transformers`` ``generate`` tokens/s on the same weights (dequantized
    from the GGUF with ``gguf_file=``, or an HF folder given with --hf-dir), fp32, same thread count, in
    its own process so that torch's threads never compete with the llama.cpp arms.
(d) max_stall_ms = the longest gap between ticks of a 5 ms QTimer in a QCoreApplication while a pair
    streams from the child in a JobThread (the GUI's worker), after the model was loaded. idle_stall_ms is
    the same measurement with nothing running: the machine's own noise.
(e) child_start_ms = time to start the child and load the model in it (until it answers "loaded", its
    warm-up decode included); load_ratio = that ÷ an in-process ``LlamaCppEngine.load()`` of the same file
    (the app's path before the child), medians of alternated runs after the file is in the page cache.

Load mode, like for like: llama.cpp's normal mode crashes on some CPUs (AMX repacking of quantized weights,
see desktop_dpo/core/llm/load_modes.py). Unless --mode says which, a throwaway child process first loads
the model in the normal mode and decodes once; if it crashes, both arms (our child and the in-process peer)
run in safe mode (no extra buffer types), else both in the normal mode. The headline says which: mode=.

Arms (a) and (b) run in rounds, the three runs of a round back to back in rotating order; each ratio is
the median over rounds of that round's ratio (runs next to each other share the load of other processes
on a shared machine). hf_ratio uses our speed measured right before and after the transformers child (3 runs each, median).
Everything runs with --threads (2). loadavg (1-minute load at the start and the end) tells how busy the
machine was: llama.cpp's threads wait for each other at every step, so on a machine whose cores are all
taken by other processes its speed collapses and the ratios say little.

Run from the repository root:  python bench/sampling.py [--model FILE.gguf] [--tokens 64] [--repeats 7]
The model defaults to the demo model (Gemma 3 270M Q4_K_M) when its package is installed, else to the
tiny random-weight Llama of tests/plugins/tiny_model.py as Q8_0 (mechanics only).
Last line:  sampling: plumbing_ratio=.. pair_ratio=.. hf_ratio=.. max_stall_ms=.. (and more keys)
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from desktop_dpo.core import offline  # noqa: E402

offline.lock_down()  # before llama_cpp, torch or transformers are imported

from desktop_dpo.config import SamplingSettings  # noqa: E402
from desktop_dpo.core.llm.llamacpp import LlamaCppEngine, high_level_safe_mode  # noqa: E402
from desktop_dpo.core.llm.supervised import SupervisedLlamaEngine  # noqa: E402

PROMPT = "Once upon a time, in a small village by the sea,"
N_CTX = 1024


def drive(job: Any) -> Any:
    """Run a job to its end; its return value."""
    while True:
        try:
            next(job)
        except StopIteration as stop:
            return stop.value


def find_model(args: argparse.Namespace, workdir: Path) -> Path:
    """The GGUF to measure: --model, else the demo model (unpacked into a temporary folder)."""
    if args.model:
        return Path(args.model)
    from desktop_dpo.core.demo_model import demo_package, install_demo_model

    package = demo_package()
    if package is None:
        # Mechanics only: a tiny random-weight Llama says nothing about real speeds.
        from desktop_dpo.core.export.gguf import convert_hf_to_gguf
        from tests.plugins.tiny_model import build_tiny_model

        print("demo model not installed: measuring the tiny test model (pass --model for real figures)")
        folder = build_tiny_model(workdir / "tiny-llama")
        return drive(convert_hf_to_gguf(folder, workdir / "tiny-llama-q8_0.gguf", outtype="q8_0"))
    print("unpacking the demo model ...", flush=True)
    return drive(install_demo_model(workdir, package))


# ---------------------------------------------------------------------------------------------------------
# Load mode: the normal one where it works, else safe mode for both arms
# ---------------------------------------------------------------------------------------------------------


def open_llama(model: Path, *, safe: bool, **kwargs: Any) -> Any:
    """``llama_cpp.Llama(model, **kwargs)``, in safe mode when ``safe``."""
    import llama_cpp

    with high_level_safe_mode() if safe else contextlib.nullcontext():
        return llama_cpp.Llama(str(model), verbose=False, **kwargs)


def probe_child(spec: dict[str, Any]) -> None:
    """Runs in a throwaway child: load in the normal mode, decode a batch and one token (where llama.cpp's
    repacked weights are first used, and crash on CPUs that cannot take them); print "probe ok"."""
    import llama_cpp

    llm = open_llama(
        Path(spec["model"]),
        safe=False,
        n_ctx=256,
        n_batch=spec["n_batch"],
        n_gpu_layers=-1 if llama_cpp.llama_supports_gpu_offload() else 0,  # as the normal mode loads
        n_threads=spec["threads"],
        n_threads_batch=spec["threads"],
        flash_attn=spec["flash_attn"],
    )
    tokens = llm.tokenize(PROMPT.encode("utf-8"))[:8]
    llm.eval(tokens)
    llm.eval(tokens[:1])
    llm.close()
    print("probe ok", flush=True)


def detect_mode(model: Path, args: argparse.Namespace, n_batch: int) -> tuple[str, str]:
    """The load mode both arms use, and why."""
    if args.mode != "auto":
        return args.mode, "asked for with --mode"
    spec = {
        "model": str(model),
        "threads": args.threads,
        "flash_attn": args.flash_attn == "on",
        "n_batch": n_batch,
    }
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    )
    try:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--probe-child", json.dumps(spec)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    except subprocess.TimeoutExpired:
        return "safe", "the normal-mode probe hung"
    if proc.returncode == 0 and "probe ok" in proc.stdout:
        return "normal", "the normal-mode probe loaded and decoded"
    if proc.returncode < 0:
        how = f"signal {-proc.returncode}"
        with contextlib.suppress(ValueError):
            how = f"{signal.Signals(-proc.returncode).name}, {how}"
    else:
        last = proc.stderr.strip().splitlines()[-1:] or [""]
        how = f"exit code {proc.returncode}: {last[0][:200]}"
    return "safe", f"the normal-mode probe crashed ({how})"


# ---------------------------------------------------------------------------------------------------------
# (e) load: child start vs in-process
# ---------------------------------------------------------------------------------------------------------


def time_loads(
    model: Path, engine_kwargs: dict[str, Any], mode: str, repeats: int
) -> tuple[SupervisedLlamaEngine, list[float], list[float]]:
    """Alternated loads: (the last child engine, still loaded; child start seconds; in-process seconds)."""
    child_s: list[float] = []
    inproc_s: list[float] = []
    engine: SupervisedLlamaEngine | None = None
    for index in range(repeats):
        for arm in ("child", "inproc") if index % 2 == 0 else ("inproc", "child"):
            if arm == "inproc":
                start = time.perf_counter()
                local = LlamaCppEngine(model, safe_mode=mode == "safe", **engine_kwargs).load()
                inproc_s.append(time.perf_counter() - start)
                local.close()
            else:
                if engine is not None:
                    engine.close()
                start = time.perf_counter()
                engine = SupervisedLlamaEngine(model, mode=mode, **engine_kwargs).load()  # type: ignore[arg-type]
                child_s.append(time.perf_counter() - start)
    assert engine is not None
    return engine, child_s, inproc_s


# ---------------------------------------------------------------------------------------------------------
# (a) and (b)
# ---------------------------------------------------------------------------------------------------------


def time_ours(engine: SupervisedLlamaEngine, settings: SamplingSettings, seed: int) -> tuple[float, int, str]:
    start = time.perf_counter()
    result = drive(engine.generate(PROMPT, settings, seed=seed, ignore_eos=True))
    return time.perf_counter() - start, result.completion_tokens, result.text


def time_ours_pair(
    engine: SupervisedLlamaEngine, settings: SamplingSettings, seeds: tuple[int, int]
) -> tuple[float, int]:
    start = time.perf_counter()
    first, second = drive(engine.generate_pair(PROMPT, settings, seeds=seeds, ignore_eos=True))
    return time.perf_counter() - start, min(first.completion_tokens, second.completion_tokens)


def time_llama(
    llm: Any, prompt_tokens: list[int], settings: SamplingSettings, seed: int
) -> tuple[float, int, str]:
    llm.reset()  # evaluate the prompt again, as ours does (otherwise it reuses the cached prefix)
    start = time.perf_counter()
    out = llm.create_completion(
        prompt_tokens,
        max_tokens=settings.max_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=settings.top_k,
        min_p=settings.min_p,
        repeat_penalty=settings.repeat_penalty,
        seed=seed,
    )
    seconds = time.perf_counter() - start
    return seconds, out["usage"]["completion_tokens"], out["choices"][0]["text"]


# ---------------------------------------------------------------------------------------------------------
# (c) transformers, in a child process
# ---------------------------------------------------------------------------------------------------------


def hf_child(spec: dict[str, Any]) -> None:
    """Runs in the child: load the weights, warm up, time ``generate``; print one JSON line."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(spec["threads"])
    start = time.perf_counter()
    if spec["hf_dir"]:
        model = AutoModelForCausalLM.from_pretrained(spec["hf_dir"], dtype=torch.float32)
    else:
        path = Path(spec["gguf"])
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    model.eval()
    load_s = time.perf_counter() - start
    ids = torch.tensor([spec["prompt_tokens"]])
    s = spec["settings"]

    def generate(n: int) -> float:
        torch.manual_seed(spec["seed"])
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                temperature=s["temperature"],
                top_k=s["top_k"],
                top_p=s["top_p"],
                min_p=s["min_p"],
                repetition_penalty=s["repeat_penalty"],
                max_new_tokens=n,
                min_new_tokens=n,  # the same fixed length as the other arms (EOS ignored)
                pad_token_id=0,
            )
        assert out.shape[1] - ids.shape[1] == n
        return time.perf_counter() - t0

    generate(4)  # warm-up
    times = [generate(spec["tokens"]) for _ in range(spec["repeats"])]
    print("hf_result " + json.dumps({"times": times, "tokens": spec["tokens"], "load_s": load_s}), flush=True)


def run_hf(
    model: Path,
    hf_dir: str | None,
    prompt_tokens: list[int],
    settings: SamplingSettings,
    args: argparse.Namespace,
) -> float:
    """transformers tokens/s (median), measured in a child process."""
    spec = {
        "gguf": str(model),
        "hf_dir": hf_dir,
        "prompt_tokens": prompt_tokens,
        "settings": settings.to_dict(),
        "tokens": args.hf_tokens,
        "repeats": args.hf_repeats,
        "threads": args.threads,
        "seed": 1,
    }
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    )
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--hf-child", json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("hf_result ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"transformers arm failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}"
        )
    result = json.loads(lines[-1].removeprefix("hf_result "))
    tps = [result["tokens"] / t for t in result["times"]]
    print(
        f"transformers: load {result['load_s']:.0f} s, {result['tokens']} tokens, tok/s "
        + ", ".join(f"{x:.2f}" for x in tps),
        flush=True,
    )
    return statistics.median(tps)


# ---------------------------------------------------------------------------------------------------------
# (d) event-loop stalls while a pair streams in a worker thread
# ---------------------------------------------------------------------------------------------------------


def measure_stalls(
    engine: SupervisedLlamaEngine | None, settings: SamplingSettings, idle_ms: int = 0
) -> tuple[float, int]:
    """Largest gap (ms) between 5 ms timer ticks while a pair streams (engine given) or while idle for
    ``idle_ms``; and how many events reached the event loop."""
    from PySide6.QtCore import QCoreApplication, QObject, Qt, QTimer, Slot

    from desktop_dpo.workers.job_worker import JobThread

    app = QCoreApplication.instance() or QCoreApplication([])
    ticks: list[float] = []

    class Sink(QObject):
        """Lives in the main thread, like a view: receives events through queued connections."""

        def __init__(self) -> None:
            super().__init__()
            self.events = 0
            self.chars = 0

        @Slot(object)
        def on_event(self, event: object) -> None:
            self.events += 1
            self.chars += len(getattr(event, "text", ""))

    sink = Sink()
    timer = QTimer()
    timer.setTimerType(Qt.TimerType.PreciseTimer)
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    if engine is not None:
        thread = JobThread(
            "bench-pair",
            lambda token: engine.generate_pair(PROMPT, settings, seeds=(1, 2), cancel=token, ignore_eos=True),
        )
        thread.event.connect(sink.on_event, Qt.ConnectionType.QueuedConnection)
        thread.finished.connect(app.quit)
        QTimer.singleShot(0, thread.start)
    else:
        QTimer.singleShot(idle_ms, app.quit)
    timer.start()
    QTimer.singleShot(120_000, app.quit)  # never hang the benchmark
    app.exec()
    timer.stop()
    if engine is not None:
        thread.wait()
        if thread.outcome != "succeeded":
            raise RuntimeError(f"the pair job in the worker thread ended with {thread.outcome}")
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    return (max(gaps) * 1000.0 if gaps else float("nan")), sink.events


# ---------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="GGUF file (default: the demo model)")
    parser.add_argument("--hf-dir", help="HF folder with the same weights for the transformers arm")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per response (default 64)")
    parser.add_argument("--repeats", type=int, default=7, help="rounds of the llama.cpp arms (default 7)")
    parser.add_argument("--hf-tokens", type=int, default=24, help="tokens per transformers run (default 24)")
    parser.add_argument("--hf-repeats", type=int, default=2, help="transformers runs (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for every arm (default 2)")
    parser.add_argument("--flash-attn", choices=["on", "off"], default="on", help="for ours and the peer")
    parser.add_argument(
        "--mode",
        choices=["auto", "normal", "safe"],
        default="auto",
        help="llama.cpp load mode of both arms (default auto: normal unless a probe child crashes in it)",
    )
    parser.add_argument("--load-repeats", type=int, default=3, help="loads of each kind for load_ratio")
    parser.add_argument("--hf-child", help=argparse.SUPPRESS)
    parser.add_argument("--probe-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hf_child:
        hf_child(json.loads(args.hf_child))
        return
    if args.probe_child:
        probe_child(json.loads(args.probe_child))
        return

    logging.getLogger("desktop_dpo.llama_cpp").setLevel(logging.ERROR)  # llama.cpp's load-time warnings
    settings = SamplingSettings(max_tokens=args.tokens)
    flash_attn = args.flash_attn == "on"
    with tempfile.TemporaryDirectory(prefix="dpo-sampling-") as tmp, contextlib.ExitStack() as cleanup:
        model = find_model(args, Path(tmp))
        print(f"model: {model.name}, {args.tokens} tokens per response, {args.threads} threads", flush=True)
        load_before = os.getloadavg()[0]

        engine_kwargs: dict[str, Any] = {"n_ctx": N_CTX, "n_threads": args.threads, "flash_attn": flash_attn}
        n_batch = LlamaCppEngine(model, **engine_kwargs).n_batch
        mode, why = detect_mode(model, args, n_batch)  # also brings the file into the page cache
        print(f"load mode: {mode} ({why})", flush=True)

        engine, child_s, inproc_s = time_loads(model, engine_kwargs, mode, args.load_repeats)
        cleanup.callback(engine.close)  # the child ends before its model's folder is removed
        child_start_ms = statistics.median(child_s) * 1000.0
        load_ratio = statistics.median(child_s) / statistics.median(inproc_s)
        print(
            f"load: child start + load {', '.join(f'{x * 1000:.0f}' for x in child_s)} ms, in-process "
            f"{', '.join(f'{x * 1000:.0f}' for x in inproc_s)} ms (child pid {engine.pid}, {engine.mode} mode)",
            flush=True,
        )
        llm = open_llama(
            model,
            safe=mode == "safe",
            n_ctx=N_CTX,
            n_batch=engine.n_batch,
            n_threads=args.threads,
            n_threads_batch=args.threads,
            # The layers the child offloads (0 without a GPU; fewer in safe mode on a GPU).
            n_gpu_layers=engine.gpu_layers,
            flash_attn=flash_attn,
        )
        try:
            prompt_tokens = engine.tokenize(PROMPT)
            # A seed with which llama-cpp-python (which stops at end-of-generation) writes the full length.
            seed = 1
            for candidate in range(1, 11):
                _, n, _ = time_llama(llm, prompt_tokens, settings, candidate)
                if n == args.tokens:
                    seed = candidate
                    break
            _, _, ours_text = time_ours(engine, settings, seed)  # warm-up
            _, _, peer_text = time_llama(llm, prompt_tokens, settings, seed)
            time_ours_pair(engine, settings, (seed, seed + 1))
            # (llama-cpp-python drops bytes that are not UTF-8 where ours shows a replacement mark.)
            same_text = int(ours_text.replace("\ufffd", "") == peer_text)
            print(f"seed {seed}; same text as llama-cpp-python: {bool(same_text)}", flush=True)

            # Rounds: the three arms back to back (order rotated), so that each round's ratios compare runs
            # made under the same load from other processes; the headline takes the median round.
            ours_tps: list[float] = []
            plumbing: list[float] = []
            pairs: list[float] = []
            arms = ["ours", "peer", "pair"]
            for index in range(args.repeats):
                times: dict[str, float] = {}
                for arm in arms[index % 3 :] + arms[: index % 3]:
                    if arm == "ours":
                        times[arm], n, _ = time_ours(engine, settings, seed)
                        ours_tps.append(n / times[arm])
                    elif arm == "peer":
                        times[arm], n, _ = time_llama(llm, prompt_tokens, settings, seed)
                        times[arm] *= args.tokens / n  # seconds for the full length, if it ended early
                    else:
                        times[arm], _ = time_ours_pair(engine, settings, (seed, seed + 1))
                plumbing.append(times["peer"] / times["ours"])
                pairs.append(times["pair"] / times["ours"])
                print(
                    f"round {index + 1}: ours {times['ours']:.2f} s, llama-cpp-python {times['peer']:.2f} s, "
                    f"pair {times['pair']:.2f} s -> plumbing {plumbing[-1]:.2f}, pair {pairs[-1]:.2f}",
                    flush=True,
                )
        finally:
            llm.close()

        stalls = []
        events = 0
        for _ in range(3):
            stall, events = measure_stalls(engine, settings)
            stalls.append(stall)
        idle_stall, _ = measure_stalls(None, settings, idle_ms=3000)
        print(
            f"event loop: max gap {', '.join(f'{s:.1f}' for s in stalls)} ms while a pair streams "
            f"({events} events), {idle_stall:.1f} ms idle",
            flush=True,
        )

        # transformers, with our speed measured just before and after it (same load conditions).
        around = [args.tokens / time_ours(engine, settings, seed)[0] for _ in range(3)]
        hf_tps = run_hf(model, args.hf_dir, prompt_tokens, settings, args)
        around += [args.tokens / time_ours(engine, settings, seed)[0] for _ in range(3)]

    plumbing_ratio = statistics.median(plumbing)
    pair_ratio = statistics.median(pairs)
    hf_ratio = statistics.median(around) / hf_tps
    print(
        f"sampling: plumbing_ratio={plumbing_ratio:.2f} pair_ratio={pair_ratio:.2f} hf_ratio={hf_ratio:.1f} "
        f"max_stall_ms={max(stalls):.1f} plumbing_ratio_range={min(plumbing):.2f}-{max(plumbing):.2f} "
        f"pair_ratio_range={min(pairs):.2f}-{max(pairs):.2f} ours_tok_s={statistics.median(ours_tps):.1f} "
        f"ours_best_tok_s={max(ours_tps):.1f} hf_tok_s={hf_tps:.2f} idle_stall_ms={idle_stall:.1f} "
        f"same_text={same_text} tokens={args.tokens} threads={args.threads} "
        f"child_start_ms={child_start_ms:.0f} load_ratio={load_ratio:.2f} mode={mode} "
        f"loadavg={load_before:.1f}-{os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
