"""Unlearning methods under one contract (see :mod:`dlfd.methods.base`), registered by key.

Importing this package registers every method; ``dlfd.methods.unlearn`` runs one.
"""

from __future__ import annotations

import importlib

from dlfd.methods.api import unlearn
from dlfd.methods.base import MethodParams, UnlearnData, UnlearnResult
from dlfd.methods.registry import MethodSpec, get_method, list_methods, register_method

#: Method modules in the order ``dlfd methods`` lists them.
METHOD_MODULES = (
    "original",
    "retrain",
    "finetune",
    "cf_k",
    "eu_k",
    "neggrad",
    "neggrad_plus",
    "random_label",
    "bad_teacher",
    "unsir",
    "scrub",
    "ssd",
    "salun",
    "dlfd",
)

for _name in METHOD_MODULES:
    try:
        importlib.import_module(f"dlfd.methods.{_name}")
    except ModuleNotFoundError as _exc:  # a method not written yet
        if _exc.name != f"dlfd.methods.{_name}":
            raise

__all__ = [
    "MethodParams",
    "MethodSpec",
    "UnlearnData",
    "UnlearnResult",
    "get_method",
    "list_methods",
    "register_method",
    "unlearn",
]
