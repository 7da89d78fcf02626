"""The main job: start the sandbox mail server and run the example project against it.

Run it with `./dev demo`. Each step is a `mailconnector` command, printed before it runs, so the output
reads like a session at a terminal. The sandbox is stopped and its files removed at the end.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from mailconnector.sandbox import Sandbox

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent / "mailconnector"


def run(workdir: Path, *args: str, check: bool = True) -> int:
    print(f"\n$ mailconnector {shlex.join(args)}", flush=True)
    env = dict(os.environ, MAILCONNECTOR_PROJECT=str(workdir / "mailconnector.yaml"))
    proc = subprocess.run([str(BIN), *args], cwd=workdir, env=env, check=False)
    if check and proc.returncode != 0:
        raise SystemExit(f"demo step failed with exit code {proc.returncode}: mailconnector {shlex.join(args)}")
    return proc.returncode


def main() -> None:
    workdir = HERE.parent / "demo-out"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir()
    print("Starting the sandbox mail server (Dovecot + Postfix on 127.0.0.1)...", flush=True)
    with Sandbox.start() as sandbox:
        try:
            sandbox.write_project(workdir / "mailconnector.yaml")
            run(workdir, "test", "sandbox")
        finally:
            sandbox.remove()
    print(f"\nDemo finished; its files are in {workdir}")


if __name__ == "__main__":
    main()
