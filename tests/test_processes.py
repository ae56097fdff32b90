"""No orphans: a child group started by prefopt dies with it, on SIGTERM (exit 143) and on SIGINT (exit 130)."""

import signal
import subprocess
import sys
import time

import pytest

from conftest import alive, descendants

DRIVER = """
import sys
from prefopt.processes import Terminated, exit_on_signals, run_child
exit_on_signals()
child = [sys.executable, "-c", "import subprocess, sys, time; "
         "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); time.sleep(120)"]
try:
    run_child(child)
except KeyboardInterrupt:
    sys.exit(130)
except Terminated:
    sys.exit(143)
"""


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_killing_prefopt_leaves_no_child_behind(sig, code):
    driver = subprocess.Popen([sys.executable, "-c", DRIVER])
    deadline = time.time() + 60
    while len(descendants(driver.pid)) < 2:  # the child and its grandchild are up
        assert time.time() < deadline and driver.poll() is None
        time.sleep(0.1)
    family = descendants(driver.pid)
    driver.send_signal(sig)  # to prefopt alone, as `kill PID` does (not to its process group)
    assert driver.wait(timeout=60) == code
    time.sleep(0.5)
    assert not [pid for pid in family if alive(pid)], "children outlived prefopt"


def test_killing_prefopt_train_stops_its_accelerate_ranks(run_dir, tmp_path):
    """The real thing: `prefopt train` launches accelerate, which starts a rank; SIGTERM to prefopt alone ends all."""
    from conftest import CI_RECIPE

    command = [
        sys.executable,
        "-m",
        "prefopt.cli",
        "train",
        str(CI_RECIPE),
        "--output-dir",
        str(run_dir),
        "--set",
        "training.trl.max_steps=100000",
        "--output",
        str(tmp_path / "train"),
    ]
    prefopt = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while len(descendants(prefopt.pid)) < 2:  # the accelerate launcher and its rank
        assert time.time() < deadline and prefopt.poll() is None, "training did not start"
        time.sleep(0.2)
    family = descendants(prefopt.pid)
    prefopt.send_signal(signal.SIGTERM)
    assert prefopt.wait(timeout=60) == 143
    time.sleep(0.5)
    assert not [pid for pid in family if alive(pid)], "accelerate or its ranks outlived prefopt"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the death signal (PR_SET_PDEATHSIG) is Linux's")
def test_a_sigkill_of_prefopt_still_stops_its_children():
    """No clean-up runs in a SIGKILLed prefopt: the supervisor leading the child group stops it when prefopt dies."""
    driver = subprocess.Popen([sys.executable, "-c", DRIVER])
    deadline = time.time() + 60
    while len(descendants(driver.pid)) < 3:  # the supervisor, the child and its grandchild are up
        assert time.time() < deadline and driver.poll() is None
        time.sleep(0.1)
    family = descendants(driver.pid)
    driver.kill()
    driver.wait(timeout=30)
    deadline = time.time() + 30
    while [pid for pid in family if alive(pid)] and time.time() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in family if alive(pid)], "children outlived a SIGKILLed prefopt"


def test_the_supervisor_passes_the_exit_code_through():
    from prefopt.processes import run_child

    assert run_child([sys.executable, "-c", "import sys; sys.exit(7)"]) == 7
    assert run_child([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"]) == 143
