"""Data sets: synthetic defaults made in code, users' own tables, and real data sets."""

from .dataset import Dataset, as_float_array

__all__ = ["Dataset", "as_float_array"]
