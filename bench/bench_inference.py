"""Deterministic inference: a replayed model call vs the same call live, and the recorder's
cost when it is off. Whole pytest processes, the sides alternating in each round.

1. ``replay`` vs ``live``: a project whose tests each start a library stack (the
   ``llama_stack`` fixture) on a run config with llama-stack's ``remote::openai``
   provider pointed at the local fake model (``tests/openai_server.py``, on 127.0.0.1)
   and make one ``chat.completions.create``. ``live`` runs with the model server up;
   ``replay`` (``--llama-inference=replay``) with no server at all, from the recordings
   one ``--llama-inference=record`` run made before the rounds. Two figures per side:
   the call itself (timed inside each test, median over every test of every round), and
   one more test of the suite (the difference of a process of N2 and one of N1 tests over
   N2 - N1: imports, collection and start-up cancel out; median over rounds).
   The live model is local and answers at once, so this is the recorder's own cost; a
   real model's call takes seconds, which replay does not.
2. ``off``: the recorder not chosen (``live``, the default) vs the plugin without its
   inference module at all (``-p no:pytest_llamastate.plugin.inference``): a suite of
   trivial tests, so the per-test hooks are all that differs. Wall and CPU time (user +
   system of the pytest process), each the median of the rounds: on a shared machine the
   wall time scatters with the other processes' load, the CPU time much less.

Run with the venv of the release to measure (``.venv/bin/python bench/bench_inference.py``;
``... bench_inference.py off`` measures the second part alone).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

from bench_core import run_pytest, run_pytest_timed
from bench_library import home_size
from openai_server import with_fake_model

from pytest_llamastate.releases import detect

ROUNDS = 3
N1, N2 = 5, 25
OFF_TESTS = 2000
OFF_ROUNDS = 7
FLAVOR = detect()

CONFTEST = """
import os
import pytest
from openai_server import URL_VAR, running_openai_server

@pytest.fixture(scope="session", autouse=True)
def fake_model():
    if os.environ.get("BENCH_NO_MODEL"):  # replay: nothing listens there
        os.environ[URL_VAR] = "http://127.0.0.1:9/v1"
        yield
        return
    with running_openai_server() as server:
        os.environ[URL_VAR] = server.base_url
        yield
"""

CHAT_TESTS = """
import os
import time
import pytest

@pytest.mark.parametrize("n", range(int(os.environ["BENCH_TESTS"])))
def test_chat(llama_stack, n):
    messages = [{"role": "user", "content": f"question {n}"}]
    chat = llama_stack.client.chat.completions
    start = time.perf_counter()
    answer = chat.create(model="openai/fake-model", messages=messages)
    took = time.perf_counter() - start
    assert answer.choices[0].message.content.startswith("answer ")
    with open(os.environ["BENCH_TIMES"], "a") as out:
        out.write(f"{took}\\n")
"""

TRIVIAL_TESTS = f"""
import pytest
@pytest.mark.parametrize("n", range({OFF_TESTS}))
def test_it(n):
    assert n >= 0
"""


def _chat_project(root: Path) -> Path:
    tests = root / "tests"
    tests.mkdir(parents=True)
    config = with_fake_model(yaml.safe_load(FLAVOR.default_config.read_text()))
    (tests / "run.yaml").write_text(yaml.safe_dump(config))
    shutil.copy(Path(__file__).parent.parent / "tests" / "openai_server.py", tests)
    (tests / "conftest.py").write_text(CONFTEST)
    (tests / "test_chat.py").write_text(CHAT_TESTS)
    (root / "pytest.ini").write_text(
        "[pytest]\nllama_stack_config = tests/run.yaml\nllama_stack_mode = library\n"
        "pythonpath = tests\n"
    )
    return root


def _run(root: Path, side: str, tests: int, times: Path) -> float:
    """One whole pytest process of ``tests`` chat tests on ``side`` (live/record/replay)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLAMASTATE_", "PYTEST_"))}
    env.update(BENCH_TESTS=str(tests), BENCH_TIMES=str(times))
    if side == "replay":
        env["BENCH_NO_MODEL"] = "1"
    return run_pytest(root / "tests", [f"--llama-inference={side}"], env=env, cwd=root)


def replay_vs_live() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        root = _chat_project(Path(tmp, "project"))
        scratch = Path(tmp, "record.times")
        _run(root, "record", N2, scratch)  # the recordings every replay round reads
        recordings = list((root / "tests" / "recordings").glob("*.json"))
        per_test: dict[str, list[float]] = {"live": [], "replay": []}
        calls: dict[str, Path] = {side: Path(tmp, f"{side}.times") for side in per_test}
        for _ in range(ROUNDS):
            for side in ("live", "replay"):
                small = _run(root, side, N1, calls[side])
                large = _run(root, side, N2, calls[side])
                per_test[side].append((large - small) / (N2 - N1))
        call = {
            side: statistics.median(float(t) for t in path.read_text().split())
            for side, path in calls.items()
        }
    live_test, replay_test = (statistics.median(per_test[s]) for s in ("live", "replay"))
    return {
        "tests": [N1, N2],
        "rounds": ROUNDS,
        "recording_files": len(recordings),
        "live_call_ms": round(call["live"] * 1000, 2),
        "replay_call_ms": round(call["replay"] * 1000, 2),
        "call_ratio": round(call["replay"] / call["live"], 3),
        "live_test_s": round(live_test, 4),
        "replay_test_s": round(replay_test, 4),
        "test_ratio": round(replay_test / live_test, 3),
    }


def recorder_off() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp, "trivial")
        suite.mkdir()
        (suite / "test_trivial.py").write_text(TRIVIAL_TESTS)
        sides = {
            "without": ["-p", "no:pytest_llamastate.plugin.inference"],
            "off": ["--llama-inference=live"],
        }
        runs: dict[str, list[tuple[float, float]]] = {side: [] for side in sides}
        for _ in range(OFF_ROUNDS):
            for side, args in sides.items():
                runs[side].append(run_pytest_timed(suite, args))
    figures: dict[str, object] = {"tests": OFF_TESTS, "rounds": OFF_ROUNDS}
    for index, kind in enumerate(("wall", "cpu")):
        without, off = (statistics.median(r[index] for r in runs[s]) for s in sides)
        figures[kind] = {
            "without_inference_module_s": round(without, 3),
            "recorder_off_s": round(off, 3),
            "ratio": round(off / without, 3),
            "per_test_us": round((off - without) / OFF_TESTS * 1e6, 1),
        }
    return figures


def main(parts: tuple[str, ...] = ("replay", "off")) -> dict[str, object]:
    return {
        "release": f"{FLAVOR.name} {FLAVOR.version()}",
        **({"replay_vs_live": replay_vs_live()} if "replay" in parts else {}),
        **({"recorder_off": recorder_off()} if "off" in parts else {}),
        "cpus": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 1),
        "home": home_size(),
    }


if __name__ == "__main__":
    print(json.dumps(main(tuple(sys.argv[1:]) or ("replay", "off")), indent=2))
