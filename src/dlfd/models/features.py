"""Feature access for any classifier: logits and an intermediate representation in one pass.

Unlearning methods such as DLFD need the features *and* the logits of the same forward pass,
with gradients, for models users bring themselves. A layer is chosen by name:

* ``"penultimate"`` (or None): the input of the classification head, via the model's
  ``forward_features``/``forward_head`` (models from :func:`dlfd.models.create_model` have them),
  else the input of the model's last ``nn.Linear`` (``"NAME:input"``, see
  :func:`penultimate_layer`), which is the head of most PyTorch classifiers;
* ``"logits"``: the model output itself;
* any dotted name from ``model.named_modules()``: that module's output, captured by a forward
  hook; ``"NAME:input"``: that module's (first) input, captured by a forward pre-hook.
"""

from __future__ import annotations

import difflib

from torch import Tensor, nn

from dlfd.errors import ConfigError

PENULTIMATE = "penultimate"
LOGITS = "logits"
INPUT_SUFFIX = ":input"
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


def penultimate_layer(model: nn.Module) -> str:
    """The layer ``"penultimate"`` means for ``model``: ``"penultimate"`` itself when it has
    ``forward_features``/``forward_head``, else ``"NAME:input"`` for its last ``nn.Linear``
    (in ``named_modules`` order). A model with neither is refused."""
    if has_split_forward(model):
        return PENULTIMATE
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears or not linears[-1]:
        raise ConfigError(
            f"feature layer 'penultimate' needs forward_features/forward_head or an nn.Linear "
            f"head, which {type(model).__name__} lacks; name a layer instead (one of "
            f"{', '.join(_module_names(model)[:_SHOWN_NAMES]) or 'its modules'}) or 'logits'"
        )
    return linears[-1] + INPUT_SUFFIX


def validate_feature_layer(model: nn.Module, layer: str | None) -> None:
    """Raise :class:`ConfigError` now if ``layer`` cannot be extracted from ``model``."""
    if layer is None or layer == PENULTIMATE:
        penultimate_layer(model)
        return
    if not isinstance(layer, str):
        raise ConfigError(f"feature layer must be a string, got {layer!r}")
    if layer == LOGITS:
        return
    names = _module_names(model)
    if layer.removesuffix(INPUT_SUFFIX) not in names:
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
        layer = penultimate_layer(model)
        if layer == PENULTIMATE:
            features = model.forward_features(x)
            logits = model.forward_head(features)
            return logits, _flatten(features)
    if layer == LOGITS:
        logits = model(x)
        return logits, _flatten(logits)

    module = model.get_submodule(layer.removesuffix(INPUT_SUFFIX))
    captured: list[object] = []

    def keep(value: object) -> None:
        # Clone so that a later in-place op (e.g. ReLU(inplace=True)) cannot alter what we keep;
        # clone is differentiable, so gradients still reach the layer.
        captured.append(value.clone() if isinstance(value, Tensor) else value)

    if layer.endswith(INPUT_SUFFIX):
        handle = module.register_forward_pre_hook(lambda _m, inputs: keep(inputs[0]))
    else:
        handle = module.register_forward_hook(lambda _m, _inputs, output: keep(output))
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
    "penultimate_layer",
    "validate_feature_layer",
]
