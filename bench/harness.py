"""Benchmark harness: one real local stack, every `bench/bench_*.py` module in its own process, one table.

Each module exposes `run(quick: bool) -> list[dict]`; a row holds measure, value, unit, baseline,
baseline_value, ratio, target, met. The harness starts Kafka + PostgreSQL once (or uses KP_KAFKA_BOOTSTRAP /
KP_DATABASE_URL when both are set), exports both variables to the modules and runs each module in a child
process with a time budget, so a module that crashes or hangs becomes a failed row and the others still run.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kp.local import LocalStack

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def bench_stack(name: str) -> Iterator[LocalStack]:
    """The stack a benchmark module runs on: the harness's (KP_KAFKA_BOOTSTRAP / KP_DATABASE_URL) or its own."""
    run_dir = Path(os.environ.get("KP_BENCH_RUN_DIR") or ROOT / ".run" / f"bench-{os.getpid()}") / name
    stack = LocalStack.from_env(run_dir)
    stack.start_infra()
    try:
        yield stack
    finally:
        stack.stop()
BENCH_DIR = ROOT / "bench"
RESULTS_DIR = BENCH_DIR / "results"
ROW_FIELDS = ("measure", "value", "unit", "baseline", "baseline_value", "ratio", "target", "met")
# Wall-clock budget per module; a module over budget is stopped and reported as failed.
BUDGET_S = {True: 150.0, False: 900.0}


def discover() -> list[str]:
    """Module names `bench_<area>` found next to this file, sorted."""
    return sorted(p.stem for p in BENCH_DIR.glob("bench_*.py"))


def select(names: list[str], only: list[str] | None) -> list[str]:
    if not only:
        return names
    wanted = {o if o.startswith("bench_") else f"bench_{o}" for o in only}
    unknown = wanted - set(names)
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(sorted(unknown))}; have: {', '.join(names)}")
    return [n for n in names if n in wanted]


def normalise(row: dict[str, Any], module: str) -> dict[str, Any]:
    """Fill missing fields, derive `ratio` when both figures are there, keep extra keys."""
    out = {k: row.get(k) for k in ROW_FIELDS}
    out.update({k: v for k, v in row.items() if k not in out})
    out["module"] = module
    value, base = out.get("value"), out.get("baseline_value")
    if out.get("ratio") is None and _is_number(value) and _is_number(base) and base:
        out["ratio"] = value / base
    out.setdefault("status", "ok")
    return out


def failed_row(module: str, error: str) -> dict[str, Any]:
    return {"module": module, "measure": f"{module} (failed)", "value": None, "unit": "", "baseline": None,
            "baseline_value": None, "ratio": None, "target": None, "met": False, "status": "failed",
            "error": error}


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


# ------------------------------------------------------------------------------------------ child side


def run_module_here(module: str, quick: bool, out: Path) -> int:
    """Child process: import one module, call `run(quick)`, write its rows (or the error) as JSON."""
    try:
        mod = importlib.import_module(f"bench.{module}")
        rows = mod.run(quick)
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise TypeError(f"run() must return a list of dicts, got {type(rows).__name__}")
        out.write_text(json.dumps({"rows": rows}, default=str))
        return 0
    except BaseException as exc:  # every failure becomes a failed row
        out.write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}",
                                   "traceback": traceback.format_exc()[-4000:]}))
        return 1


# ----------------------------------------------------------------------------------------- parent side


def run_module(module: str, quick: bool, env: dict[str, str], work: Path) -> tuple[list[dict[str, Any]], float]:
    """Run one module in a child process within its budget; always return rows (failed ones on error)."""
    out = work / f"{module}.json"
    log = work / f"{module}.log"
    started = time.monotonic()
    cmd = [sys.executable, "-m", "bench.harness", "--child", module, "--out", str(out)]
    if quick:
        cmd.append("--quick")
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            proc.wait(timeout=BUDGET_S[quick])
            error = None
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            error = f"exceeded its budget of {BUDGET_S[quick]:.0f}s"
    elapsed = time.monotonic() - started
    if error is None and not out.exists():
        error = f"exited with {proc.returncode} without a result"
    if error is None:
        result = json.loads(out.read_text())
        if "error" in result:
            tail = result.get("traceback", "").strip().splitlines()[-3:]
            error = result["error"] + (" -- " + " / ".join(t.strip() for t in tail) if tail else "")
        elif not result["rows"]:
            error = "run() returned no rows"
        else:
            return [normalise(r, module) for r in result["rows"]], elapsed
    row = failed_row(module, error)
    # The run folder is removed afterwards, so keep the end of the module's output with the result.
    row["log_tail"] = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    return [row], elapsed


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop the child and whatever it started (it runs in its own session)."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {"nproc": os.cpu_count(), "python": platform.python_version(),
                            "platform": platform.platform()}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["mem_total_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                        text=True, check=False, timeout=5).stdout.strip()
    return info


def fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        a = abs(v)
        s = f"{v:,.0f}" if a >= 1000 else f"{v:.1f}" if a >= 10 else f"{v:.2f}" if a >= 0.1 else f"{v:.3g}"
    elif isinstance(v, int):
        s = f"{v:,}"
    else:
        s = str(v)
    return f"{s} {unit}".strip()


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table: measure | project | baseline | ratio | target | met."""
    head = ["measure", "project", "same-run baseline", "ratio", "target", "met?"]
    lines = []
    for r in rows:
        base = fmt(r.get("baseline_value"), r.get("baseline_unit") or r.get("unit") or "")
        if r.get("baseline"):
            base = f"{r['baseline']}: {base}" if r.get("baseline_value") is not None else str(r["baseline"])
        ratio = f"{r['ratio']:.2f}x" if _is_number(r.get("ratio")) else "-"
        met = "FAILED" if r.get("status") == "failed" else fmt(r.get("met"))
        project = fmt(r.get("value"), r.get("unit") or "")
        if r.get("status") == "failed":
            project = str(r.get("error", ""))[:160]
        cells = [str(r.get("measure")), project, base, ratio, str(r.get("target") or "-"), met]
        lines.append([c.replace("|", "/").replace("\n", " ") for c in cells])
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(head)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |" for line in lines]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", default=os.environ.get("QUICK", "") not in ("", "0"),
                        help="smoke run (< 3 minutes in total)")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only this module (e.g. `system` or `bench_system`); repeatable")
    parser.add_argument("--list", action="store_true", help="list the benchmark modules and exit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        return run_module_here(args.child, args.quick, Path(args.out))
    names = select(discover(), args.only)
    if args.list:
        print("\n".join(names))
        return 0

    from kp.local import LocalStack

    started = time.monotonic()
    run_dir = ROOT / ".run" / f"bench-{os.getpid()}"
    stack = LocalStack.from_env(run_dir)
    all_rows: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    try:
        print(f"starting Kafka + PostgreSQL under {run_dir.relative_to(ROOT)} ...", flush=True)
        stack.start_infra()
        env = dict(os.environ, **stack.env, KP_BENCH_RUN_DIR=str(run_dir), PYTHONUNBUFFERED="1")
        work = run_dir / "modules"
        work.mkdir(parents=True, exist_ok=True)
        for name in names:
            print(f"running {name}{' (quick)' if args.quick else ''} ...", flush=True)
            rows, timings[name] = run_module(name, args.quick, env, work)
            all_rows += rows
            status = "failed" if any(r.get("status") == "failed" for r in rows) else f"{len(rows)} rows"
            print(f"  {name}: {status} in {timings[name]:.1f}s", flush=True)
    finally:
        if os.environ.get("KP_BENCH_KEEP"):
            stack.stop()
        else:
            stack.purge()  # the run folder and the cluster (outside it as root)
    total = time.monotonic() - started
    info = machine()
    print()
    print(table(all_rows))
    print()
    print(f"machine: {info.get('nproc')} cores, {info.get('mem_total_gib')} GiB, {info.get('cpu', '?')}; "
          f"python {info['python']}; commit {info.get('commit', '?')}; "
          f"{'quick' if args.quick else 'full'} run in {total:.0f}s")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"{stamp}.json"
    path.write_text(json.dumps({"started": stamp, "quick": args.quick, "seconds": round(total, 1),
                                "machine": info, "module_seconds": timings, "rows": all_rows},
                               indent=2, default=str))
    print(f"results: {path.relative_to(ROOT)}")
    return 1 if any(r.get("status") == "failed" for r in all_rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
