"""Crash-safe writing of models and checkpoints.

Every file is written to a temporary name in its destination folder, flushed to disk and then
renamed over the final name, so a crash leaves either the old file or the new one, never half
of one. A checkpoint folder is assembled under a temporary name and renamed into place whole;
a pruned one is renamed away before it is deleted. The temporary folders of killed writes
(``.checkpoint-*``, ``.staging-*``) are removed by the next write to the same folder.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import torch

from .._atomic import atomic_path, fsync_folder, give_default_mode, locked_temporary_folder, remove_stale_folders

TRAINER_STATE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
RNG_FILE = "rng_state.pt"
CHECKPOINT_PREFIX = "checkpoint-"
TEMPORARY_PREFIX = f".{CHECKPOINT_PREFIX}"  # checkpoint folders being written or deleted
STAGING_PREFIX = ".staging-"                # a model's files before they are moved in


def _fsync_file(path: str) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def atomic_write(path: str, write) -> None:
    """write(tmp_path) fills a temporary file beside `path`, which then replaces `path`
    (mambaret._atomic: fsync, rename, folder fsync; leftovers of killed writes cleaned up)."""
    with atomic_path(path) as tmp:
        write(tmp)


def atomic_json(path: str, obj) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")

    atomic_write(path, write)


def atomic_torch_save(path: str, obj) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_model_files(model, tokenizer_files: list[str], folder: str, write_more=None) -> None:
    """model.save_pretrained + the tokenizer files into `folder`, each file moved in atomically
    (the weights after the config and tokenizer, so a folder with weights is complete).
    write_more(staging), when given, adds files (and subfolders) before the move."""
    os.makedirs(folder, exist_ok=True)
    remove_stale_folders(folder, STAGING_PREFIX)
    with locked_temporary_folder(folder, STAGING_PREFIX) as staging:
        model.save_pretrained(staging)
        for src in tokenizer_files:
            shutil.copyfile(src, os.path.join(staging, os.path.basename(src)))
        if write_more is not None:
            write_more(staging)
        names = sorted(os.listdir(staging), key=lambda n: (n.endswith((".safetensors", ".bin")), n))
        for name in names:
            staged = os.path.join(staging, name)
            for path in ([os.path.join(staged, n) for n in os.listdir(staged)] if os.path.isdir(staged) else [staged]):
                _fsync_file(path)
        fsync_folder(staging)
        for name in names:
            staged, target = os.path.join(staging, name), os.path.join(folder, name)
            if os.path.isdir(staged):
                give_default_mode(staged)
                _remove_folder(target)  # a folder cannot be renamed over a non-empty one
            os.replace(staged, target)
        fsync_folder(folder)
        shutil.rmtree(staging, ignore_errors=True)


def write_checkpoint(output_dir: str, step: int, model, tokenizer_files: list[str], optimizer, scheduler,
                     rng_state: dict, trainer_state: dict, write_more=None) -> str:
    """output_dir/checkpoint-<step>/: the model (HF folder with tokenizer; write_more(folder) adds
    files, as for save_model_files), optimizer, scheduler, RNG states and the trainer's position;
    assembled under a temporary name, then renamed."""
    final = os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{step}")
    remove_stale_folders(output_dir, TEMPORARY_PREFIX)
    with locked_temporary_folder(output_dir, TEMPORARY_PREFIX) as tmp:
        save_model_files(model, tokenizer_files, tmp, write_more=write_more)
        atomic_torch_save(os.path.join(tmp, OPTIMIZER_FILE), optimizer.state_dict())
        atomic_torch_save(os.path.join(tmp, SCHEDULER_FILE), scheduler.state_dict())
        atomic_torch_save(os.path.join(tmp, RNG_FILE), rng_state)
        atomic_json(os.path.join(tmp, TRAINER_STATE), trainer_state)  # written last: marks it complete
        fsync_folder(tmp)
        # a checkpoint of this step already there (a rerun) is moved aside first: a kill between
        # the two renames loses that old one, never leaves a half-written folder under the name
        _remove_folder(final)
        os.replace(tmp, final)
        fsync_folder(output_dir)
    return final


def _remove_folder(path: str) -> None:
    """Renames a checkpoint folder to a temporary name, then deletes it: a kill during the
    deletion leaves a leftover the next write removes, never a partial folder that still looks
    complete."""
    if not os.path.isdir(path):
        return
    aside = tempfile.mkdtemp(prefix=TEMPORARY_PREFIX, dir=os.path.dirname(path))
    os.replace(path, aside)  # over the fresh empty folder: renaming onto an empty folder is allowed
    shutil.rmtree(aside, ignore_errors=True)


def list_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """Complete checkpoints in output_dir as (step, path), oldest first."""
    found = []
    if not os.path.isdir(output_dir):
        return found
    for name in os.listdir(output_dir):
        if name.startswith(CHECKPOINT_PREFIX) and name[len(CHECKPOINT_PREFIX):].isdigit():
            path = os.path.join(output_dir, name)
            if os.path.isfile(os.path.join(path, TRAINER_STATE)):
                found.append((int(name[len(CHECKPOINT_PREFIX):]), path))
    return sorted(found)


def read_trainer_state(checkpoint_dir: str) -> dict:
    path = os.path.join(checkpoint_dir, TRAINER_STATE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{checkpoint_dir!r} is not a complete checkpoint (no {TRAINER_STATE})")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def prune_checkpoints(output_dir: str, keep: int | None) -> None:
    """Deletes all but the newest `keep` checkpoints (keep None or 0: keep all)."""
    if not keep:
        return
    for _, path in list_checkpoints(output_dir)[:-keep]:
        _remove_folder(path)
