"""Plan-only Snakemake commands (dry runs, summaries) for the tests, forked from one process that paid the imports.

A dry run's process spends about 3 s importing Snakemake, torch and prunelab (the Snakefile's checks build every
arch) and finding Snakemake's plugins, and about half a second planning. Run as a script, this file is the planner:
it does the former once, then for each request (one JSON line on stdin: argv, cwd, env, out, timeout) forks a child
that runs Snakemake's own command-line entry point (`snakemake.cli.main`, what the `snakemake` executable calls) in
that folder and environment, its stdout and stderr in the file `out`, and answers one JSON line, {"rc": exit status,
"timed_out": bool}. `Planner` is the client side, used by tests/conftest.py.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path


class Planner:
    """The client, in the pytest process: the planner is started on the first plan-only command (in that command's
    environment) and stops when pytest exits (end of its input)."""

    proc: subprocess.Popen | None = None

    @classmethod
    def stop(cls) -> None:
        if cls.proc is not None:
            cls.proc.stdin.close()
            cls.proc.wait(30)

    @classmethod
    def run(cls, workdir: Path, args: list[str], env: dict, out: Path, timeout: float) -> int:
        """`snakemake *args` forked in `workdir` with `env`, output to `out`: its exit status (timeout: an error)."""
        if cls.proc is None or cls.proc.poll() is not None:
            cls.proc = subprocess.Popen([sys.executable, __file__], env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
            atexit.register(cls.stop)
        argv = [str(Path(sys.executable).parent / "snakemake"), *args]
        request = {"argv": argv, "cwd": str(workdir), "env": env, "out": str(out), "timeout": timeout}
        cls.proc.stdin.write(json.dumps(request) + "\n")
        cls.proc.stdin.flush()
        line = cls.proc.stdout.readline()
        assert line, f"the Snakemake planner exited ({cls.proc.wait()}) on snakemake {' '.join(args)}"
        answer = json.loads(line)
        if answer["timed_out"]:
            raise AssertionError(f"snakemake {' '.join(args)} took over {timeout} s:\n{out.read_text()[-3000:]}")
        return answer["rc"]


def run_child(request: dict) -> None:
    """In the forked child: become `snakemake <argv>` in request's folder and environment; never returns."""
    import snakemake.cli  # imported by the planner already

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


def serve() -> None:
    """The planner: pay the imports once, then fork one child per request on stdin."""
    sys.path[0] = str(Path(sys.executable).parent)  # as for the `snakemake` executable: its bin folder, not tests/
    import snakemake.cli

    import prunelab.checks  # noqa: F401  (torch, and what the Snakefile imports at parse time)
    import prunelab.methods  # noqa: F401
    import prunelab.settings  # noqa: F401

    snakemake.cli.get_argument_parser()  # finds Snakemake's plugins once (module-level registries): ~0.4 s a run
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            run_child(request)
        rc, timed_out = wait(pid, request["timeout"])
        print(json.dumps({"rc": rc, "timed_out": timed_out}), flush=True)


if __name__ == "__main__":
    serve()
