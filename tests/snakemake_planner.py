"""Plan-only Snakemake commands (dry runs, summaries) for the tests, forked from one process that paid the imports.

A dry run's process spends about 3 s importing Snakemake, torch and prunelab (the Snakefile's checks build every
arch) and finding Snakemake's plugins, and about half a second planning. This process does the former once, then for
each request (one JSON line on stdin: argv, cwd, env, out, timeout) forks a child that runs Snakemake's own
command-line entry point (`snakemake.cli.main`, what the `snakemake` executable calls) in that folder and
environment, its stdout and stderr in the file `out`; it answers one JSON line, {"rc": exit status, "timed_out":
bool}. Started by tests/conftest.py (Planner).
"""

import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

sys.path[0] = str(Path(sys.executable).parent)  # as for the `snakemake` executable: its bin folder, not tests/

import snakemake.cli  # noqa: E402

import prunelab.checks  # noqa: E402, F401  (torch, and what the Snakefile imports at parse time)
import prunelab.methods  # noqa: E402, F401
import prunelab.settings  # noqa: E402, F401

snakemake.cli.get_argument_parser()  # finds Snakemake's plugins once (their registries are module-level): ~0.4 s a run


def run_child(request: dict) -> None:
    """In the forked child: become `snakemake <argv>` in request's folder and environment; never returns."""
    code = 1
    try:
        os.setsid()
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(request["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        sys.argv = request["argv"]
        snakemake.cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def wait(pid: int, timeout: float) -> tuple[int, bool]:
    """Exit status of child `pid`; past `timeout` seconds its process group is killed first."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), False
        if time.monotonic() > deadline:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), True
        time.sleep(0.01)


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            run_child(request)
        rc, timed_out = wait(pid, request["timeout"])
        print(json.dumps({"rc": rc, "timed_out": timed_out}), flush=True)


if __name__ == "__main__":
    main()
