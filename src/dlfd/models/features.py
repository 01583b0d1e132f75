"""Feature access for any classifier: logits and an intermediate representation in one pass.

Unlearning methods such as DLFD need the features *and* the logits of the same forward pass,
with gradients, for models users bring themselves. A layer is chosen by name:

* ``"penultimate"`` (or None): the input of the classification head, via the model's
  ``forward_features``/``forward_head`` (models from :func:`dlfd.models.create_model` have them);
* ``"logits"``: the model output itself;
* any dotted name from ``model.named_modules()``: that module's output, captured by a forward hook.
"""

from __future__ import annotations

import difflib

from torch import Tensor, nn

from dlfd.errors import ConfigError

PENULTIMATE = "penultimate"
LOGITS = "logits"
_SHOWN_NAMES = 8


def has_split_forward(model: nn.Module) -> bool:
    return callable(getattr(model, "forward_features", None)) and callable(
        getattr(model, "forward_head", None)
    )


def _module_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def _unknown_layer_message(layer: str, names: list[str]) -> str:
    close = difflib.get_close_matches(layer, names, n=3)
    hint = f"did you mean {', '.join(repr(n) for n in close)}? " if close else ""
    shown = [PENULTIMATE, LOGITS, *names[:_SHOWN_NAMES]]
    more = f", ... ({len(names)} module names in all)" if len(names) > _SHOWN_NAMES else ""
    return f"unknown feature layer {layer!r}; {hint}valid layers include: {', '.join(shown)}{more}"


def validate_feature_layer(model: nn.Module, layer: str | None) -> None:
    """Raise :class:`ConfigError` now if ``layer`` cannot be extracted from ``model``."""
    if layer is None or layer == PENULTIMATE:
        if not has_split_forward(model):
            raise ConfigError(
                f"feature layer 'penultimate' needs a model with forward_features/forward_head, "
                f"which {type(model).__name__} lacks; name a layer instead (one of "
                f"{', '.join(_module_names(model)[:_SHOWN_NAMES]) or 'its modules'}) or 'logits'"
            )
        return
    if not isinstance(layer, str):
        raise ConfigError(f"feature layer must be a string, got {layer!r}")
    if layer == LOGITS:
        return
    names = _module_names(model)
    if layer not in names:
        raise ConfigError(_unknown_layer_message(layer, names))


def _flatten(features: Tensor) -> Tensor:
    return features.reshape(features.shape[0], -1)


def forward_with_features(
    model: nn.Module, x: Tensor, layer: str | None = PENULTIMATE
) -> tuple[Tensor, Tensor]:
    """Run ``model`` once on ``x``; return ``(logits, features)`` with features as (N, D).

    Features stay in the autograd graph, so losses on them train the model.
    """
    validate_feature_layer(model, layer)
    if layer is None or layer == PENULTIMATE:
        features = model.forward_features(x)
        logits = model.forward_head(features)
        return logits, _flatten(features)
    if layer == LOGITS:
        logits = model(x)
        return logits, _flatten(logits)

    module = model.get_submodule(layer)
    captured: list[object] = []

    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        # Clone so that a later in-place op (e.g. ReLU(inplace=True)) cannot alter what we keep;
        # clone is differentiable, so gradients still reach the layer.
        captured.append(output.clone() if isinstance(output, Tensor) else output)

    handle = module.register_forward_hook(hook)
    try:
        logits = model(x)
    finally:
        handle.remove()

    if len(captured) != 1:
        raise ConfigError(
            f"feature layer {layer!r} ran {len(captured)} times in one forward pass, expected "
            "exactly once; name a module that is used once"
        )
    output = captured[0]
    if not isinstance(output, Tensor) or output.dim() == 0:
        raise ConfigError(
            f"feature layer {layer!r} outputs {type(output).__name__}, not a batched tensor; "
            "name a module that returns one tensor"
        )
    return logits, _flatten(output)


def extract_features(model: nn.Module, x: Tensor, layer: str | None = PENULTIMATE) -> Tensor:
    """Just the (N, D) ``layer`` features of ``model`` on ``x`` (see forward_with_features)."""
    return forward_with_features(model, x, layer)[1]


__all__ = [
    "LOGITS",
    "PENULTIMATE",
    "extract_features",
    "forward_with_features",
    "has_split_forward",
    "validate_feature_layer",
]
