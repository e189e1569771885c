"""The paper's losses as pure functions of tensors (eqs. 2-5).

L_DM    (eq. 2): sum over classes of the squared distance between mean real and mean synthetic embeddings.
L_primal (eq. 3): the teacher's cross-entropy on the synthetic images.
L_stat  (eq. 3): D(theta*, -sum_i lambda_i grad_theta L(Phi(x_i; theta*), y_i)).
L_total (eqs. 4, 5): L_primal + alpha * L_stat + gamma * L_DM.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def class_counts(labels: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """[num_classes] samples per class. A sum of ones, not bincount: bincount sizes its output from the labels,
    which costs a GPU a device sync at every call."""
    ones = torch.ones(len(labels), dtype=dtype, device=labels.device)
    return torch.zeros(num_classes, dtype=dtype, device=labels.device).index_add_(0, labels, ones)


def class_means(features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """[num_classes, D] mean feature per class; a class without samples gets zeros."""
    sums = features.new_zeros(num_classes, features.shape[1]).index_add_(0, labels, features)
    return sums / class_counts(labels, num_classes, features.dtype).clamp_min(1)[:, None]


def l_dm(real_features: Tensor, real_labels: Tensor, syn_features: Tensor, syn_labels: Tensor,
         num_classes: int) -> Tensor:
    """DM reference's loss: sum_c ||mean_c(real) - mean_c(syn)||^2 over the classes present in syn_labels."""
    gap = class_means(real_features, real_labels, num_classes) - class_means(syn_features, syn_labels, num_classes)
    present = class_counts(syn_labels, num_classes, gap.dtype) > 0  # a weight, not a mask: a mask syncs too
    return ((gap ** 2).sum(1) * present).sum()


def l_primal(logits: Tensor, labels: Tensor, only_misclassified: bool = False) -> Tensor:
    """Cross-entropy of the teacher on S. only_misclassified: primal feasibility as a constraint (the DSV
    paper's masked form): an image the teacher already assigns to its class adds nothing, so the loss stops
    pushing it ever deeper into its class, where its gradient, and its use to L_stat, vanishes."""
    per_image = F.cross_entropy(logits, labels, reduction="none")
    if only_misclassified:
        per_image = per_image * (logits.argmax(1) != labels)
    return per_image.mean()


def flatten(tensors: Sequence[Tensor]) -> Tensor:
    """Parameters (or their gradients) as one vector, in the order given."""
    return torch.cat([t.reshape(-1) for t in tensors])


def _mean_abs(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).abs().mean()


def _mean_square(a: Tensor, b: Tensor) -> Tensor:
    return ((a - b) ** 2).mean()


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    return 1 - F.cosine_similarity(a, b, dim=0, eps=1e-12)


# Distances between theta* and the multiplier-weighted gradient sum, over all parameters flattened.
# l1 is the DSV paper's: the absolute difference averaged per parameter.
DISTANCES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "l1": _mean_abs,
    "l2": _mean_square,
    "cosine": _cosine,
}


def l_stat(params: Sequence[Tensor], logits: Tensor, labels: Tensor, lambdas: Tensor,
           distance: str = "l1") -> Tensor:
    """Stationarity: D(theta*, -sum_i lambda_i grad_theta L_i).

    sum_i lambda_i grad_theta L_i is the gradient of sum_i lambda_i L_i, so one autograd.grad call with
    create_graph=True yields it, and the returned loss backpropagates into the images and the multipliers.
    `logits` must have been computed from `params` (the teacher's), which need requires_grad=True.
    """
    weighted = (lambdas * F.cross_entropy(logits, labels, reduction="none")).sum()
    grads = torch.autograd.grad(weighted, list(params), create_graph=True)
    theta = flatten([p.detach() for p in params])
    return DISTANCES[distance](theta, -flatten(grads))


def stat_floor(params: Sequence[Tensor], distance: str = "l1") -> float:
    """L_stat's value when sum_i lambda_i grad L_i is zero: D(theta*, 0)."""
    theta = flatten([p.detach() for p in params])
    return DISTANCES[distance](theta, torch.zeros_like(theta)).item()


def l_total(primal: Tensor, stat: Tensor, dm: Tensor, alpha: float, gamma: float) -> Tensor:
    return primal + alpha * stat + gamma * dm
