"""A small, fast 4-block CNN for tests and quick experiments."""

from __future__ import annotations

from torch import Tensor, nn

from dlfd.models._checks import require_positive_int
from dlfd.models.registry import register_model

_WIDTHS = (32, 64, 128, 128)


def _block(in_channels: int, out_channels: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """Four conv3x3-BN-ReLU blocks (2x max-pool after the first three), global pool, linear fc."""

    feature_dim = _WIDTHS[-1]

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        widths = (in_channels, *_WIDTHS)
        self.features = nn.Sequential(
            *(
                _block(widths[i], widths[i + 1], pool=i < len(_WIDTHS) - 1)
                for i in range(len(_WIDTHS))
            )
        )
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.feature_dim, num_classes)
        self.init_weights()

    def init_weights(self) -> None:
        """He-normal (fan_out) convolutions; BatchNorm and Linear keep their defaults."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: Tensor) -> Tensor:
        return self.pool(self.features(x)).flatten(1)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.fc(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


@register_model("small_cnn", "Small 4-block CNN (32/64/128/128), for tests and quick runs")
def small_cnn(num_classes: int, *, in_channels: int = 3) -> SmallCNN:
    require_positive_int(in_channels, "in_channels")
    return SmallCNN(num_classes=num_classes, in_channels=in_channels)
