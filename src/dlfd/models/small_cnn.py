"""A small, fast 4-block CNN for tests and quick experiments."""

from __future__ import annotations

from torch import Tensor, nn

from dlfd.models.registry import Classifier, register_model, require_positive_int

_WIDTHS = (32, 64, 128, 128)


def _block(in_channels: int, out_channels: int, pool: bool) -> nn.Sequential:
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    layers = [conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, *([nn.MaxPool2d(2)] if pool else []))


class SmallCNN(Classifier):
    """Four conv3x3-BN-ReLU blocks (2x max-pool after the first three), global pool, linear fc."""

    feature_dim = _WIDTHS[-1]

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        widths = (in_channels, *_WIDTHS)
        pools = (True,) * (len(_WIDTHS) - 1) + (False,)
        self.features = nn.Sequential(*map(_block, widths[:-1], widths[1:], pools))
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.feature_dim, num_classes)
        self.init_weights()

    def init_weights(self) -> None:
        """He-normal (fan_out) convolutions; BatchNorm and Linear keep their defaults."""
        self._he_init(batchnorm=False)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.pool(self.features(x)).flatten(1)


@register_model("small_cnn", "Small 4-block CNN (32/64/128/128), for tests and quick runs")
def small_cnn(num_classes: int, *, in_channels: int = 3) -> SmallCNN:
    require_positive_int(in_channels, "in_channels")
    return SmallCNN(num_classes=num_classes, in_channels=in_channels)
