"""One worker of ``--distribute multiworker`` under a supervising process."""

from __future__ import annotations

import os
import sys

from ..exitcodes import EXIT_ERROR, UserError


#: seconds a multiworker process waits for the other workers of TF_CONFIG (env override)
PEER_TIMEOUT_ENV = "UNET_FT_PEER_TIMEOUT"


PEER_TIMEOUT = 600.0


def supervise_multiworker(argv, timeout: float) -> int:
    """Run ``unet-ft ARGV`` (one worker of ``--distribute multiworker``) in a child process
    and wait for it: TensorFlow blocks, holding Python, until every worker of TF_CONFIG is up,
    and swallows SIGTERM meanwhile. Here a missing peer ends the worker after ``timeout``
    seconds with one sentence (exit 1), and SIGTERM / Ctrl-C end it at once (exit 143 / 130).
    """
    import select
    import signal
    import subprocess

    from ..runtime import PEERS_READY_FD, worker_task

    kind, index, workers = worker_task()   # a bad TF_CONFIG: its error, before any start
    r, w = os.pipe()
    child = subprocess.Popen([sys.executable, "-m", "keras_unet_ft.cli", *argv],
                             env={**os.environ, PEERS_READY_FD: str(w)}, pass_fds=(w,))
    os.close(w)

    def stop(signum, frame):
        child.kill()
        child.wait()
        print(f"unet-ft: stopped by {signal.Signals(signum).name}", file=sys.stderr)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    ready, _, _ = select.select([r], [], [], timeout)   # "up", or end of file: it ended
    os.close(r)
    if not ready and child.poll() is None:
        child.kill()
        child.wait()
        print(f"unet-ft: error: worker {index} of {workers} waited {timeout:g} s for the others "
              "of TF_CONFIG and they did not all come up: start the same command on every "
              f"machine of the cluster, each with its own task index (wait longer: "
              f"{PEER_TIMEOUT_ENV}=SECONDS)", file=sys.stderr)
        return EXIT_ERROR
    return child.wait()   # up and training, or ended early (its own message said why)


def _peer_timeout() -> float:
    raw = os.environ.get(PEER_TIMEOUT_ENV)
    try:
        value = float(raw) if raw else PEER_TIMEOUT
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise UserError(f"{PEER_TIMEOUT_ENV}={raw!r}: expected seconds > 0")
    return value
