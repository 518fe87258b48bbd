"""The old import path of mambaret/search/quantization.py, where the code lives now."""
from .search.quantization import (PRECISIONS, calibrate_ranges, quantize_embeddings,
                                  binary_to_ubinary, int8_steps)

__all__ = ["PRECISIONS", "calibrate_ranges", "quantize_embeddings", "binary_to_ubinary",
           "int8_steps"]
