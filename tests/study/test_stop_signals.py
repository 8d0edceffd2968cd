"""A study stopped by SIGTERM (or SIGINT) stops its step's worker too, even when it was started in the background
by a non-interactive shell, which starts it with SIGINT ignored (found live: the worker went on alone)."""
import os
import signal
import subprocess
import sys
import time

import pytest

from lorank.study.executor import terminate_as_interrupt


def test_terminate_raises_keyboard_interrupt_inside_and_the_old_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a background job
    try:
        with pytest.raises(KeyboardInterrupt):
            with terminate_as_interrupt():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before[0])
        signal.signal(signal.SIGINT, before[1])


def test_a_worker_that_inherited_an_ignored_sigint_still_stops_on_it():
    code = ("import time; from lorank.study.worker import interruptible; interruptible()\n"
            "try:\n    print('ready', flush=True); time.sleep(60)\nexcept KeyboardInterrupt:\n"
            "    print('interrupted', flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert "interrupted" in out and proc.returncode == 0
