"""Reading a trained classifier back from its checkpoint without Lightning and without unpickling.

The checkpoint is the Lightning file ``fit`` writes (``best.ckpt``/``last.ckpt``), read with
``torch.load(weights_only=True)``: the network is rebuilt from the recorded hyper-parameters and the ``net.*``
weights, so ``why``, ``serve``, ``report`` and the explainers never import Lightning.
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sae_lab.models.resnet import SketchResNet

NET_ARGS = ("stem_stride", "maxpool", "last_stride", "layer")
"""SketchResNet arguments recorded among a ClassifierModule's hyper-parameters."""


@dataclass
class LoadedClassifier:
    """A trained classifier read back from its checkpoint."""

    net: SketchResNet
    """The network, in eval mode with gradients off."""
    hparams: dict
    """The training module's hyper-parameters (class names, network shape, optimiser settings)."""
    data_hparams: dict
    """The SketchDataModule arguments it was trained with (data source, image size, …)."""
    fingerprint: str
    """Content hash of its weights: the identity an SAE records and later checks."""
    path: str
    """Where the checkpoint was read from."""
    extra: dict = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        return list(self.hparams.get("class_names") or [str(i) for i in range(self.net.num_classes)])

    @property
    def image_size(self) -> int:
        return int(self.data_hparams.get("image_size", 64))

    def to(self, device: str | torch.device) -> LoadedClassifier:
        self.net.to(device)
        return self


def weights_fingerprint(state_dict: dict[str, torch.Tensor]) -> str:
    """sha1 (16 hex digits) of a module's weights by name, metric states left out."""
    h = hashlib.sha1()
    for key in sorted(state_dict):
        if key.startswith("metrics."):
            continue
        h.update(key.encode())
        h.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def load_classifier(path: str | Path, map_location: str = "cpu") -> LoadedClassifier:
    """Reads a classifier checkpoint with ``weights_only=True`` (nothing is unpickled).

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        ValueError: the file is not a sae_lab classifier checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"classifier checkpoint {path} is a folder, expected a file such as best.ckpt")
    if not path.is_file():
        raise FileNotFoundError(f"classifier checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # its message advises weights_only=False: never pass that on
        raise ValueError(
            f"{path} is not a checkpoint sae_lab can load safely: it holds pickled Python objects beyond tensors and "
            "plain containers (refused; nothing in it ran)"
        ) from None
    except Exception as e:  # a text file, a truncated or foreign file
        if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a cut one has lost its directory
            raise ValueError(f"{path} is not a PyTorch checkpoint (or is truncated): give the best.ckpt or last.ckpt "
                             "that `fit` wrote") from None  # fmt: skip
        raise ValueError(f"{path} is a damaged PyTorch checkpoint ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path} is not a sae_lab classifier checkpoint")
    hparams = {k: v for k, v in ckpt.get("hyper_parameters", {}).items() if not k.startswith("_")}
    state = ckpt.get("state_dict") or {}
    if not any(k.startswith("net.") for k in state):
        raise ValueError(f"{path} is not a sae_lab classifier checkpoint (no classifier weights in it)")
    num_classes = hparams.get("num_classes")
    if num_classes is None:
        raise ValueError(f"{path} does not record num_classes; was it written by ClassifierModule?")
    net = SketchResNet(int(num_classes), **{k: hparams[k] for k in NET_ARGS if k in hparams})
    try:
        net.load_state_dict({k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")})
    except RuntimeError as e:  # tensors missing or of other shapes than the recorded hyper-parameters give
        raise ValueError(f"{path}: its weights do not fit the network it records: {str(e).splitlines()[0]}") from None
    net.eval().requires_grad_(False)
    data = {k: v for k, v in ckpt.get("datamodule_hyper_parameters", {}).items() if not k.startswith("_")}
    return LoadedClassifier(net, hparams, data, weights_fingerprint(state), str(path))
