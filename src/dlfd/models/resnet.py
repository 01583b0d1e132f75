"""A hand-written ResNet-18 whose state_dict keys match torchvision's, plus the DLFD MLP variant.

Matching torchvision's module names exactly lets ImageNet weights saved from torchvision load
with ``load_state_dict`` without depending on torchvision itself.
"""

from __future__ import annotations

from torch import Tensor, nn

from dlfd.errors import ConfigError
from dlfd.models.registry import Classifier, register_model, require_positive_int


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 conv-BN projection) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(Classifier):
    """ResNet-18 with the ImageNet stem; ``num_classes=None`` drops ``fc`` (a bare trunk)."""

    feature_dim = 512

    def __init__(self, num_classes: int | None = 1000, in_channels: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, 64, stride=1)
        self.layer2 = self._make_layer(64, 128, stride=2)
        self.layer3 = self._make_layer(128, 256, stride=2)
        self.layer4 = self._make_layer(256, 512, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Identity() if num_classes is None else nn.Linear(self.feature_dim, num_classes)
        self.init_weights()

    @staticmethod
    def _make_layer(in_planes: int, planes: int, stride: int) -> nn.Sequential:
        return nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes))

    def init_weights(self) -> None:
        """torchvision's scheme: He-normal (fan_out) convs, unit BN; Linear keeps its default."""
        self._he_init(batchnorm=True)

    def forward_features(self, x: Tensor) -> Tensor:
        """Globally pooled trunk output, shape (N, 512)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)


class ResNet18MLP(Classifier):
    """The DLFD paper's classifier: a ResNet-18 trunk (no fc) followed by a dropout MLP head."""

    feature_dim = ResNet18.feature_dim

    def __init__(self, num_classes: int, in_channels: int = 3, dropout: float = 0.5) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.trunk = ResNet18(num_classes=None, in_channels=in_channels)
        self.head = nn.Sequential(
            nn.Linear(self.feature_dim, 256),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(256, 128),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(128, num_classes),
        )

    def forward_features(self, x: Tensor) -> Tensor:
        return self.trunk.forward_features(x)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.head(features)


@register_model("resnet18", "ResNet-18 (ImageNet stem, torchvision-compatible keys), linear head")
def resnet18(num_classes: int, *, in_channels: int = 3) -> ResNet18:
    require_positive_int(in_channels, "in_channels")
    return ResNet18(num_classes=num_classes, in_channels=in_channels)


@register_model("resnet18_mlp", "ResNet-18 trunk with the DLFD paper's 512-256-128 dropout MLP")
def resnet18_mlp(num_classes: int, *, in_channels: int = 3, dropout: float = 0.5) -> ResNet18MLP:
    require_positive_int(in_channels, "in_channels")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ConfigError(f"dropout must be a number in [0, 1), got {dropout!r}")
    return ResNet18MLP(num_classes=num_classes, in_channels=in_channels, dropout=float(dropout))
