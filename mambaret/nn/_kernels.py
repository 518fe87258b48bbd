"""autograd Functions over the C kernels (mambaret._C's training ops)."""
from __future__ import annotations


def available() -> bool:
    return False
