"""Image classifiers by name, and feature extraction for any classifier.

Importing this package imports its modules, which register the built-in models (``resnet18``,
``resnet18_mlp``, ``small_cnn``); :func:`list_models` shows them.
"""

from __future__ import annotations

from dlfd.models.features import (
    extract_features,
    forward_with_features,
    penultimate_layer,
    validate_feature_layer,
)
from dlfd.models.registry import MODELS, create_model, list_models, register_model

MODELS.discover(__name__)  # each model module registers its models

__all__ = [
    "create_model",
    "extract_features",
    "forward_with_features",
    "list_models",
    "penultimate_layer",
    "register_model",
    "validate_feature_layer",
]
