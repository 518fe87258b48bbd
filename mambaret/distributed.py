"""The old import path of mambaret/encoding/distributed.py, where the code lives now."""
from .encoding.distributed import encode, write_shards, connect

__all__ = ["encode", "write_shards", "connect"]
