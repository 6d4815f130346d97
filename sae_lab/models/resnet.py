"""SketchResNet: torchvision ResNet-18 with a 1-channel stem and a features()/head() split."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torchvision

LAYERS = ("layer1", "layer2", "layer3", "layer4")


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Reads weights from `.safetensors` or a torch file, never unpickling arbitrary objects."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


class SketchResNet(nn.Module):
    """ResNet-18 for 1-channel sketches, split at `layer` so an SAE can sit between the halves.

    Contract: ``features(x)`` → (B, C, H, W) at the explained layer; ``head(fmap)`` → logits (the
    remaining layers, global average pool and the linear :attr:`classifier`); ``forward = head ∘ features``.
    With ``layer="layer4"`` the head is exactly pool + linear (:attr:`head_is_linear`), which per-image
    explanations need; :meth:`logit_weights` gives that linear map. Callers use these accessors, never the
    submodules (``fc``, ``rest``: their names are the checkpoint's keys).

    Args:
        num_classes: output classes.
        stem_stride: stride of the 7×7 stem convolution (1 or 2).
        maxpool: keep the stem's 3×3 max-pool (another factor 2 of downsampling).
        last_stride: stride of layer4 (1 keeps layer3's grid: more tokens per image).
        layer: the explained layer, one of layer1..layer4.
        pretrained: None, "imagenet" (torchvision weights, downloaded) or a local weights file
            (.safetensors, or a torch state dict read with ``weights_only=True``). RGB stem filters are
            averaged into one channel; a classifier head of another size is re-initialised.
    """

    def __init__(
        self,
        num_classes: int,
        stem_stride: int = 2,
        maxpool: bool = True,
        last_stride: int = 1,
        layer: str = "layer4",
        pretrained: str | None = None,
    ):
        super().__init__()
        if layer not in LAYERS:
            raise ValueError(f"layer must be one of {LAYERS}, got {layer!r}")
        if stem_stride not in (1, 2) or last_stride not in (1, 2):
            raise ValueError(f"stem_stride and last_stride must be 1 or 2, got {stem_stride}, {last_stride}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        net = torchvision.models.resnet18(num_classes=num_classes)
        if pretrained is not None:
            self._load_pretrained(net, pretrained)
        rgb = net.conv1.weight.data
        net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=stem_stride, padding=3, bias=False)
        net.conv1.weight.data.copy_(rgb.mean(dim=1, keepdim=True))
        if not maxpool:
            net.maxpool = nn.Identity()
        if last_stride == 1:
            net.layer4[0].conv1.stride = (1, 1)
            net.layer4[0].downsample[0].stride = (1, 1)
        self.layer = layer
        self.num_classes = num_classes
        split = LAYERS.index(layer) + 1
        stages = [net.layer1, net.layer2, net.layer3, net.layer4]
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.body = nn.Sequential(*stages[:split])
        self.rest = nn.Sequential(*stages[split:])
        self.fc = net.fc

    @staticmethod
    def _load_pretrained(net: nn.Module, pretrained: str) -> None:
        if pretrained == "imagenet":
            state = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=True)
        else:
            state = load_state_dict_file(pretrained)
        state = {k: v for k, v in state.items() if not k.startswith("fc.") or v.shape == net.state_dict()[k].shape}
        missing, unexpected = net.load_state_dict(state, strict=False)
        bad = [k for k in missing if not k.startswith("fc.")] + list(unexpected)
        if bad:
            raise ValueError(f"{pretrained} is not a ResNet-18 state dict (mismatched keys: {bad[:5]}…)")

    @property
    def channels(self) -> int:
        """C of the explained layer's map."""
        return {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}[self.layer]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) ink images → (B, C, H, W) map at the explained layer."""
        return self.body(self.stem(x))

    @property
    def classifier(self) -> nn.Linear:
        """The final linear layer: pooled features (B, 512) → (B, num_classes) logits."""
        return self.fc

    @property
    def head_is_linear(self) -> bool:
        """True when the head is global average pool + :attr:`classifier` alone (the explained layer is layer4)."""
        return len(self.rest) == 0

    def logit_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W, b) of the final linear layer: W (num_classes, 512), b (num_classes,); logits = W·pooled + b."""
        return self.fc.weight, self.fc.bias

    def head(self, fmap: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, C, H, W) map → (B, num_classes) logits, or with ``pre_logits`` the pooled (B, 512) vector the
        linear layer reads (timm's ``forward_head(x, pre_logits=True)``)."""
        pooled = torch.flatten(self.rest(fmap).mean(dim=(2, 3)), 1)
        return pooled if pre_logits else self.fc(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
