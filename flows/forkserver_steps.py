"""Imported by the fork server (`runners.prepare_fork_server`) to set the run's steps up there
once, so that every worker forked from it starts with their models in memory, shared
copy-on-write, instead of loading its own: at 100,000 documents each worker of a +1% run spent
seconds loading heliport's model, on the run's critical path.

multiprocessing's fork server runs nothing but imports before it starts forking, hence a
module that acts when imported. It finds the steps in the environment (`STEPS_ENV`, set only
while the fork server starts), each a step whose class says `setup_before_fork`, with the
parent's module search path: Python 3.11's fork server does not take it over (the workers
forked from it do), and a step may come from a folder the parent added.
"""
from __future__ import annotations

import gc
import json
import os
import sys

from textmill.flows.config import StepSpec
from textmill.flows.runners import FORK_SERVER_STEPS_ENV as STEPS_ENV
from textmill.flows.shard import step_for


def set_up_steps(payload: str | None) -> None:
    """Set up each step of `payload` (JSON: `sys_path`, `steps`) in this process.

    A step whose setup fails here is left to the workers, which set it up again and report the
    error through their task, as without a fork server.
    """
    if not payload:
        return
    wanted = json.loads(payload)
    sys.path[:] = wanted["sys_path"]
    for fields in wanted["steps"]:
        try:
            step_for(StepSpec(**fields))
        except Exception:  # noqa: BLE001 - see the docstring: the worker's task reports it
            continue
    # What is loaded now lives as long as the fork server: keep the collector of each forked
    # worker from walking it (and so from copying the pages it touches).
    gc.freeze()


set_up_steps(os.environ.get(STEPS_ENV))
