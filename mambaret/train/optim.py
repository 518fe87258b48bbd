"""AdamW with the usual exclusions from weight decay, and linear warm-up then linear decay."""
from __future__ import annotations

import math

import torch

# A_log and D are the SSM's dynamics and skip, not projection weights: decaying them toward 0
# would change A = -exp(A_log) toward -1 and remove the skip. Biases and norms as in BERT.
_NO_DECAY_SUFFIXES = ("A_log", "D", "bias")


def no_weight_decay(name: str) -> bool:
    """True for parameters that AdamW should not decay: A_log, D, biases and norm weights."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf in _NO_DECAY_SUFFIXES:
        return True
    module = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else ""
    return "norm" in module or name.startswith("exits.")  # exit heads are norm gains


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, keep = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (keep if no_weight_decay(name) else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if keep:
        groups.append({"params": keep, "weight_decay": 0.0})
    return groups


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float = 0.01, betas=(0.9, 0.999),
                   eps: float = 1e-8) -> torch.optim.AdamW:
    """AdamW over parameter_groups, fused (one kernel over all parameters) where torch has the
    fused kernel for their device and dtype: on a CPU the per-tensor loop costs more than the
    backward of a short batch on the 130M shape (about 1.25 s against 0.2-0.4 s a step,
    bench/results/train.md). Same update rule."""
    groups = parameter_groups(model, weight_decay)
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True)
    except (RuntimeError, TypeError, ValueError):  # a device or dtype without the fused kernel
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    """ceil(ratio x total), as transformers' TrainingArguments counts warm-up steps."""
    return int(math.ceil(warmup_ratio * total_steps))


def linear_schedule(optimizer: torch.optim.Optimizer, total_steps: int,
                    warmup: int) -> torch.optim.lr_scheduler.LambdaLR:
    """lr x step/warmup during warm-up, then down linearly to 0 at total_steps."""

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
