"""Launch N ``jax.distributed`` worker processes on loopback and collect their ``RESULT`` lines.

A worker script takes ``--process_id I --port P`` (plus its own arguments), starts
``jax.distributed`` on ``127.0.0.1:P`` and prints one line ``RESULT {json}``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_workers(script: str, args_per_process: list[list[str]], timeout: float = 300) -> list[dict]:
    """Run ``python script *args_per_process[i] --process_id i --port P`` for every ``i`` at once;
    returns each process's ``RESULT`` JSON (in process order). A failed worker fails the test with
    its output."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("XLA_FLAGS", None)
    procs = [subprocess.Popen([sys.executable, script, *args, "--process_id", str(i), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
             for i, args in enumerate(args_per_process)]
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            outs.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    results = []
    for rc, out, err in outs:
        assert rc == 0, f"worker failed rc={rc}\n{out[-2000:]}\n{err[-4000:]}"
        line = [ln for ln in out.splitlines() if ln.startswith("RESULT ")][-1]
        results.append(json.loads(line[len("RESULT "):]))
    return results
