"""The old import path of mambaret/arch/random_model.py, where the code lives now."""
from .arch.random_model import SHAPES, random_config, random_weights, write_random_model

__all__ = ["SHAPES", "random_config", "random_weights", "write_random_model"]
