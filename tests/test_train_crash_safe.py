"""Training checkpoints survive SIGKILL at any moment of a save: every checkpoint folder that
looks complete loads and holds one whole saved version; killed saves' leftovers are removed."""
from __future__ import annotations

import multiprocessing
import os
import random

import pytest

torch = pytest.importorskip("torch")
from train_support import write_checkpoints_until_killed, write_tiny_model  # noqa: E402

from mambaret.train import list_checkpoints, saving  # noqa: E402

# each kill costs a fresh writer and its first checkpoint: 10 here, 50 for the reliability
# report (MAMBARET_CHECKPOINT_KILLS=50, see bench/results/reliability.md)
KILLS = int(os.environ.get("MAMBARET_CHECKPOINT_KILLS", "10"))


def _check(path: str) -> int:
    """The version a complete checkpoint holds; fails if any part of it is missing or mixed."""
    from mambaret.nn import MambaModel

    state = saving.read_trainer_state(path)
    params = list(MambaModel.from_pretrained(path).parameters())
    assert all(bool((p == state["version"]).all()) for p in params), path
    for name in (saving.OPTIMIZER_FILE, saving.SCHEDULER_FILE, saving.RNG_FILE):
        torch.load(os.path.join(path, name), weights_only=False)
    assert torch.load(os.path.join(path, saving.RNG_FILE), weights_only=False)["step"] == state["global_step"]
    return state["version"]


def _leftovers(folder: str) -> list[str]:
    return [n for n in os.listdir(folder) if n.startswith(".")]


def test_killed_checkpoint_saves_leave_complete_checkpoints(tmp_path):
    model_dir = write_tiny_model(str(tmp_path / "model"))
    folder = str(tmp_path / "run")
    os.makedirs(folder)
    # children fork from a server that has imported torch once, before any thread started
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "mambaret.train", "train_support"])
    rng = random.Random(0)
    interrupted, seen = 0, set()
    for _ in range(KILLS):
        started = context.Event()
        child = context.Process(target=write_checkpoints_until_killed, args=(folder, model_dir, started))
        child.start()
        assert started.wait(120), "the writer never finished a first checkpoint"
        child.join(rng.uniform(0.0, 0.15))
        child.kill()
        child.join()
        checkpoints = list_checkpoints(folder)
        assert checkpoints, "no complete checkpoint left"
        seen.update(_check(path) for _, path in checkpoints)
        interrupted += bool(_leftovers(folder))
    assert len(seen) >= 2
    # the next save removes what the killed ones left
    from mambaret.train import linear_schedule, load_model, make_optimizer

    model = load_model(model_dir)
    optimizer = make_optimizer(model, lr=1e-3)
    saving.write_checkpoint(folder, 1000, model, [], optimizer, linear_schedule(optimizer, 10, 1), {}, {"version": 0})
    assert _leftovers(folder) == []
    print(f"{KILLS} kills, {interrupted} left a temporary folder behind, versions seen {sorted(seen)}")
    assert interrupted > 0  # the kills did land inside saves
