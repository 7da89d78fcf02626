"""What the web console's answers cost over a busy operation log, beside the command line asked the same thing.

A SQLite store is filled with ``--runs`` runs (default 10,000: twenty operations, one run in seven partial
with a failed record kept beside its error), then each question is asked three ways, in one run:

- the console's JSON API, through a real ``mailconnector console`` on a loopback port (HTTP with a Bearer
  token, keep-alive, as a script or a monitoring system asks it); the median of ``--repeat`` requests;
- the same console's page (HTML, with the cookie), where there is one;
- the command line a person would use otherwise (``mailconnector logs --json``, ``ledger list --json``): a
  whole process each time, as a script that calls it pays; the median of five.

Questions: the newest 100 runs, the partial runs of the last 24 hours, one run in full, the ledger's uncertain
sends, the health of the consumers, and /metrics (no command-line equivalent). The ratio column is how many
times faster the console answered than the command.

Run: ``.venv/bin/python bench/bench_console.py`` (about half a minute; ``--runs``, ``--repeat``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml

from mailconnector.state import Store

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from services.console import start_console, stop_console  # noqa: E402  (the tests' way of starting it)

BIN = Path(sys.executable).parent / "mailconnector"
TOKEN = "bench-console-token-0123456789"


def fill(directory: Path, runs: int) -> str:
    (directory / "mailconnector.yaml").write_text(yaml.safe_dump(
        {"connections": {}, "operations": {}, "settings": {"state": "state.db"}}))
    store = Store(directory / "state.db")
    some_run = ""
    for i in range(runs):
        run_id = store.start_run(f"op{i % 20}", {"source": {"type": "file", "path": "in.jsonl"}})
        partial = i % 7 == 0
        if partial:
            store.record_run_error(run_id, f"record {i}", {"message": "refused", "stage": "target",
                                                           "record": {"to": ["x@example.test"], "subject": "s"}})
            some_run = run_id
        store.finish_run(run_id, status="partial" if partial else "success", read=10,
                         written=9 if partial else 10, failed=1 if partial else 0)
    for i in range(50):
        store.claim(f"<m{i}@example.test>", connection="c", holder="gone:1:x", recipients=["bob@example.test"])
        store.settle(f"<m{i}@example.test>", holder="gone:1:x", status="uncertain", accepted=[])
    store.close()
    return some_run


def median_ms(call: Callable[[], object], repeat: int) -> float:
    call()  # warm
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mc-bench-console-") as tmp:
        directory = Path(tmp)
        t0 = time.perf_counter()
        some_run = fill(directory, args.runs)
        print(f"store filled with {args.runs} runs in {time.perf_counter() - t0:.1f} s")
        console = start_console(directory / "mailconnector.yaml", token=TOKEN)
        try:
            api = httpx.Client(base_url=console.url.rstrip("/"), headers={"Authorization": f"Bearer {TOKEN}"})
            pages = httpx.Client(base_url=console.url.rstrip("/"), follow_redirects=True)
            pages.get(f"/?token={TOKEN}")

            def cli(*argv: str) -> Callable[[], object]:
                return lambda: subprocess.run([str(BIN), *argv, "--json"], cwd=directory, check=True,
                                              capture_output=True, env={**os.environ, "COLUMNS": "200"})

            rows = [
                ("newest 100 runs", "/api/runs", "/runs", cli("logs", "--limit", "100")),
                ("partial runs, last 24 h", "/api/runs?status=partial&since_hours=24",
                 "/runs?status=partial&since_hours=24", None),
                ("one run in full", f"/api/runs/{some_run}", f"/runs/{some_run}", cli("logs", some_run)),
                ("uncertain sends", "/api/ledger?status=uncertain", "/ledger",
                 cli("ledger", "list", "--status", "uncertain")),
                ("health", "/api/health", "/health", None),
                ("metrics", "/metrics", None, None),
            ]
            print("\n| question | API ms | page ms | command ms | command / API |\n|---|---|---|---|---|")
            for name, route, page, command in rows:
                api_ms = median_ms(lambda route=route: api.get(route).raise_for_status(), args.repeat)
                page_ms = median_ms(lambda page=page: pages.get(page).raise_for_status(), args.repeat) \
                    if page else None
                cli_ms = median_ms(command, 5) if command else None
                ratio = f"{cli_ms / api_ms:.0f}×" if cli_ms else ""
                print(f"| {name} | {api_ms:.1f} | {f'{page_ms:.1f}' if page_ms else ''} | "
                      f"{f'{cli_ms:.0f}' if cli_ms else ''} | {ratio} |")
        finally:
            stop_console(console)


if __name__ == "__main__":
    main()
