"""Image classifiers by name, and feature extraction for any classifier.

Importing this package registers the built-in models (``resnet18``, ``resnet18_mlp``,
``small_cnn``); :func:`list_models` shows them.
"""

from __future__ import annotations

from dlfd.models import resnet, small_cnn  # noqa: F401  (importing registers the models)
from dlfd.models.features import extract_features, forward_with_features, validate_feature_layer
from dlfd.models.registry import create_model, list_models, register_model

__all__ = [
    "create_model",
    "extract_features",
    "forward_with_features",
    "list_models",
    "register_model",
    "validate_feature_layer",
]
