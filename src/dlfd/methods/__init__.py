"""Unlearning methods under one contract (see :mod:`dlfd.methods.base`), registered by key.

Importing this package registers every method; ``dlfd.methods.unlearn`` runs one.
"""

from __future__ import annotations

from dlfd.methods.api import unlearn
from dlfd.methods.base import MethodParams, UnlearnData, UnlearnResult
from dlfd.methods.registry import METHODS, MethodSpec, get_method, list_methods, register_method

#: The order ``dlfd methods`` and ``dlfd bench`` list methods in (reference rows, then from the
#: simplest to DLFD); every other module of the package is imported after these, so a method
#: module registers itself by existing.
LISTING_ORDER = (
    "original", "retrain", "finetune", "cf_k", "eu_k", "neggrad", "neggrad_plus", "random_label",
    "bad_teacher", "unsir", "scrub", "ssd", "salun", "dlfd",
)  # fmt: skip
METHODS.discover(__name__, first=LISTING_ORDER)

__all__ = [
    "MethodParams", "MethodSpec", "UnlearnData", "UnlearnResult", "get_method", "list_methods",
    "register_method", "unlearn",
]  # fmt: skip
