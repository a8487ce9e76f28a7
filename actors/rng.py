"""Every random number generator of a process, captured and restored as one picklable dict: Python's ``random``,
NumPy's global generator, torch's CPU generator and, where CUDA is up, each device's. A checkpoint stores one per
trainer rank and per rollout worker (vLLM on CPU samples from the process's torch generator), so a resumed stage
draws the same numbers the uninterrupted one would have."""

from __future__ import annotations

import random

import numpy as np
import torch


def capture() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def restore(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
