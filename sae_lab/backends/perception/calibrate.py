"""Fitting the presence sigmoid P = sigmoid(a · (cos + b)) of a CLIP / SigLIP backend on labelled images."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

logger = logging.getLogger(__name__)


def fit_sigmoid(cos: np.ndarray, targets: np.ndarray, steps: int = 200) -> tuple[float, float]:
    """(a, b) minimising the mean binary cross-entropy of sigmoid(a · (cos + b)) against ``targets``.

    In the parameters (a, c = a · b) this is a one-feature logistic regression, a convex problem that torch's
    L-BFGS solves in a few dozen steps.

    Args:
        cos: (N, C) cosines.
        targets: (N, C) 0/1 (or soft) targets.
        steps: L-BFGS iterations at most.

    Raises:
        ValueError: shapes differ, targets all equal, or a non-positive slope (the cosines do not separate the
            labels).
    """
    x = torch.as_tensor(np.asarray(cos, np.float64)).flatten()
    y = torch.as_tensor(np.asarray(targets, np.float64)).flatten()
    if np.shape(cos) != np.shape(targets):
        raise ValueError(f"cosines {np.shape(cos)} and targets {np.shape(targets)} differ in shape")
    if y.numel() == 0 or bool((y == y[0]).all()):
        raise ValueError("calibration needs both positive and negative targets")
    # Standardise the feature so the optimiser sees a well-conditioned problem; map back afterwards.
    mu, sd = x.mean(), x.std().clamp_min(1e-12)
    z = (x - mu) / sd
    params = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([params], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-10, tolerance_change=1e-14)  # fmt: skip

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(params[0] * z + params[1], y)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    w, c = params.detach().tolist()
    a = w / float(sd)
    if not np.isfinite(a) or a <= 0:
        raise ValueError(f"calibration gave slope a={a:g}: the cosines do not separate the labels")
    b = (c - a * float(mu)) / a  # a·(x + b) = w·(x − mu)/sd + c
    if a > 1e3:
        logger.warning("calibration slope a=%.3g is very large: the labels are (nearly) separable by cosine", a)
    return float(a), float(b)


def calibrate(
    backend, images: Sequence[Image.Image], labels: Sequence[int] | np.ndarray, class_names: Sequence[str]
) -> tuple[float, float]:
    """Fits a CLIP / SigLIP backend's (a, b) by cross-entropy against class labels on labelled images.

    Every image is scored against every class name; the target is 1 for its class and 0 for the others. Set the
    result on the backend (``backend.a, backend.b = calibrate(...)``; both are part of its identity).

    Args:
        backend: A backend with ``cosine(images, concepts) -> (N, C)`` (:class:`HFPerception`).
        images: N labelled images.
        labels: (N,) class indices into ``class_names``, or an (N, C) 0/1 matrix (several labels per image).
        class_names: The C class names, used as concept texts.

    Returns:
        The fitted (a, b).
    """
    if not hasattr(backend, "cosine"):
        raise TypeError(f"{type(backend).__name__} has no cosines to calibrate (needs a CLIP or SigLIP backend)")
    cos = np.asarray(backend.cosine(images, class_names), np.float64)
    labels = np.asarray(labels)
    if labels.ndim == 1:
        if len(labels) != len(cos):
            raise ValueError(f"{len(labels)} labels for {len(cos)} images")
        if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise ValueError(f"labels must be class indices in [0, {len(class_names)})")
        targets = np.zeros_like(cos)
        targets[np.arange(len(labels)), labels.astype(int)] = 1.0
    else:
        targets = labels.astype(np.float64)
    return fit_sigmoid(cos, targets)
