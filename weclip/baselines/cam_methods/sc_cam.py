"""SC-CAM: sub-category exploration for CAM classifiers.

Chang et al., "Weakly-Supervised Semantic Segmentation via Sub-category Exploration", CVPR 2020,
https://arxiv.org/abs/2008.01183, official code https://github.com/Juliachang/SC-CAM (read, not
copied). One round:

1. the previous round's classifier (round 1: a plain CAM classifier) gives each training image an
   image-level feature: the global average of its last feature map, single scale, eval mode
   (``extract_feature.py``: the 4096-d GAP of ResNet-38);
2. for every parent class c, the features of the images labelled with c are clustered by k-means
   into k sub-categories (official: ``KMeans(n_clusters=10, random_state=0, max_iter=300)``);
3. an image's sub-category label is multi-hot over K·k entries, entry c·k + j for each of its
   parent classes c, j its cluster in class c (``create_pseudo_label.py``);
4. a new classifier with a parent head (K) and a sub-category head (K·k) on the same pooled feature
   is trained *from the initial (ImageNet) weights* (``script.sh``) with
   L = MLSM(parent) + 5 · MLSM(sub) (``train_cls.py``: ``--subcls_loss_weight 5``);
5. three rounds (``script.sh``); the CAMs that are evaluated are the parent head's
   (``infer_cls.py`` saves the cls-20 CAMs).

The knowledge-distillation variant (this project's) is not in SC-CAM's paper or code: the previous
round's model is a teacher whose parent logits, softened by a temperature T, are matched by the
student's parent logits (`distillation_loss`, Hinton et al. 2015, https://arxiv.org/abs/1503.02531,
scaled by T²). Its temperature and weight are this project's choice (see docs/cam_methods.md).
"""

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "SC_CAM_DEFAULTS",
    "RoundRecord",
    "SubCategories",
    "distillation_loss",
    "image_features",
    "kmeans",
    "run_rounds",
    "sc_cam_loss",
    "subcategory_labels",
]

SC_CAM_DEFAULTS: Mapping[str, Any] = {
    "k": 10,  # train_cls.py / create_pseudo_label.py --k_cluster 10
    "sub_weight": 5.0,  # train_cls.py --subcls_loss_weight 5
    "rounds": 3,  # script.sh R1-R3
    "kmeans_max_iter": 300,  # create_pseudo_label.py max_iter=300
    "kmeans_n_init": 10,  # scikit-learn's KMeans default at the time (n_init=10)
    "kmeans_seed": 0,  # random_state=0
    "distill": False,
    "kd_temperature": 2.0,  # not SC-CAM's (no KD there): this project's choice
    "kd_weight": 1.0,  # not SC-CAM's: this project's choice
}


def image_features(feature_map: Tensor) -> Tensor:
    """Image-level features: the spatial mean of the last feature map (SC-CAM's GAP feature).

    Args:
        feature_map (Tensor): (B, D, h, w).

    Returns:
        Tensor: (B, D).
    """
    if feature_map.dim() != 4:
        raise ValueError(f"image_features expects (B, D, h, w), got {tuple(feature_map.shape)}")
    return feature_map.mean(dim=(2, 3))


def _kmeans_pp_init(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """k-means++ seeding: first centre uniform, each next one with probability ∝ D²."""
    n = x.shape[0]
    dev = generator.device
    first = int(torch.randint(n, (), generator=generator, device=dev))
    centers = [x[first]]
    d2 = ((x - x[first]) ** 2).sum(dim=1)
    for _ in range(1, k):
        total = float(d2.sum())
        if total <= 0:  # every point coincides with a centre: any pick is a duplicate
            pick = int(torch.randint(n, (), generator=generator, device=dev))
        else:
            weights = (d2 / total).to(dev, torch.float64)
            pick = int(torch.multinomial(weights, 1, generator=generator))
        centers.append(x[pick])
        d2 = torch.minimum(d2, ((x - x[pick]) ** 2).sum(dim=1))
    return torch.stack(centers)


def kmeans(
    x: Tensor,
    k: int,
    *,
    generator: torch.Generator,
    n_init: int = SC_CAM_DEFAULTS["kmeans_n_init"],
    max_iter: int = SC_CAM_DEFAULTS["kmeans_max_iter"],
    tol: float = 1e-4,
) -> Tuple[Tensor, Tensor, float]:
    """Lloyd's k-means with k-means++ seeding, best of ``n_init`` runs by inertia.

    Stops when the squared centre shift is ≤ tol · (mean per-dimension variance of x), the
    scikit-learn criterion; an empty cluster is re-seeded with the point farthest from its centre.

    Args:
        x (Tensor): (N, D) float.
        k (int): clusters, 1 ≤ k ≤ N.
        generator (torch.Generator): seeds every initialisation (CPU generator → CPU draws).
        n_init (int): restarts.
        max_iter (int): Lloyd iterations per restart.
        tol (float): relative tolerance.

    Returns:
        Tuple[Tensor, Tensor, float]: centres (k, D), assignment (N,) long, inertia (sum of
        squared distances to the assigned centres).
    """
    if x.dim() != 2:
        raise ValueError(f"kmeans expects x (N, D), got {tuple(x.shape)}")
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"kmeans: k={k} must lie in [1, N={n}]")
    x = x.detach().to(torch.float64)
    xg = x.to(generator.device)
    threshold = tol * float(x.var(dim=0, unbiased=False).mean()) if n > 1 else 0.0
    best: Optional[Tuple[Tensor, Tensor, float]] = None
    for _ in range(max(1, n_init)):
        centers = _kmeans_pp_init(xg, k, generator).to(x.device)
        for _ in range(max_iter):
            d2 = torch.cdist(x, centers) ** 2  # (N, k)
            assign = d2.argmin(dim=1)
            new = torch.zeros_like(centers).index_add_(0, assign, x)
            counts = torch.bincount(assign, minlength=k).to(x.dtype)
            new = new / counts.clamp(min=1)[:, None]
            empty = torch.nonzero(counts == 0).flatten().tolist()
            if empty:  # re-seed empty clusters with the points farthest from their centres
                far = d2.gather(1, assign[:, None]).squeeze(1).argsort(descending=True)
                for j, p in zip(empty, far.tolist()):
                    new[j] = x[p]
            shift = float(((new - centers) ** 2).sum())
            centers = new
            if shift <= threshold:
                break
        d2 = torch.cdist(x, centers) ** 2
        assign = d2.argmin(dim=1)
        inertia = float(d2.gather(1, assign[:, None]).sum())
        if best is None or inertia < best[2]:
            best = (centers, assign, inertia)
    assert best is not None
    return best[0].float(), best[1], best[2]


@dataclass
class SubCategories:
    """Sub-category pseudo-labels of one round.

    Attributes:
        labels (Tensor): (N, K·k) float multi-hot; entry c·k + j = image in cluster j of class c.
        assignment (Tensor): (N, K) long, the cluster of each image in each of its classes, −1
            where the image does not carry the class.
        k (int): sub-categories per parent class (the column block size).
        clusters (List[int]): clusters actually formed per class (min(k, images with the class)).
        centers (List[Optional[Tensor]]): per class, (clusters, D) centres or None.
    """

    labels: Tensor
    assignment: Tensor
    k: int
    clusters: List[int] = field(default_factory=list)
    centers: List[Optional[Tensor]] = field(default_factory=list)


def subcategory_labels(
    features: Tensor,
    cls_labels: Tensor,
    *,
    k: int = SC_CAM_DEFAULTS["k"],
    generator: torch.Generator,
    n_init: int = SC_CAM_DEFAULTS["kmeans_n_init"],
    max_iter: int = SC_CAM_DEFAULTS["kmeans_max_iter"],
) -> SubCategories:
    """Cluster each parent class's image features into k sub-categories (SC-CAM step 2-3).

    A class carried by fewer than k images gets one cluster per image (scikit-learn refuses
    n_samples < n_clusters; VOC never hits this, toy datasets can). A class with no image gets no
    cluster and its K·k block stays 0.

    Args:
        features (Tensor): (N, D) image-level features (`image_features`).
        cls_labels (Tensor): (N, K) multi-hot parent labels.
        k (int): sub-categories per class.
        generator (torch.Generator): seeds the k-means runs, class by class in order.
        n_init (int): k-means restarts.
        max_iter (int): k-means iterations.

    Returns:
        SubCategories: labels (N, K·k), assignment (N, K).
    """
    if features.dim() != 2 or cls_labels.dim() != 2 or features.shape[0] != cls_labels.shape[0]:
        raise ValueError(
            f"subcategory_labels expects features (N, D) and cls_labels (N, K) with the same N; "
            f"got {tuple(features.shape)} and {tuple(cls_labels.shape)}"
        )
    if k < 1:
        raise ValueError(f"subcategory_labels: k must be >= 1, got {k}")
    n, num_classes = cls_labels.shape
    labels = torch.zeros(n, num_classes * k, dtype=torch.float32, device=features.device)
    assignment = torch.full((n, num_classes), -1, dtype=torch.long, device=features.device)
    clusters: List[int] = []
    centers: List[Optional[Tensor]] = []
    for c in range(num_classes):
        idx = torch.nonzero(cls_labels[:, c] > 0).flatten()
        if idx.numel() == 0:
            clusters.append(0)
            centers.append(None)
            continue
        kc = min(k, int(idx.numel()))
        cen, assign, _ = kmeans(
            features[idx], kc, generator=generator, n_init=n_init, max_iter=max_iter
        )
        assign = assign.to(features.device)
        labels[idx, c * k + assign] = 1.0
        assignment[idx, c] = assign
        clusters.append(kc)
        centers.append(cen)
    return SubCategories(
        labels=labels, assignment=assignment, k=k, clusters=clusters, centers=centers
    )


def _multilabel_or_softmax(logits: Tensor, targets: Tensor, loss: str) -> Tensor:
    if loss == "multilabel_soft_margin":
        return F.multilabel_soft_margin_loss(logits, targets.float())
    if loss == "cross_entropy":
        # probability targets: one-hot for single-label data, normalised multi-hot otherwise
        t = targets.float()
        return F.cross_entropy(logits, t / t.sum(dim=1, keepdim=True).clamp(min=1e-12))
    raise ValueError(f"loss must be 'multilabel_soft_margin' or 'cross_entropy', got {loss!r}")


def sc_cam_loss(
    parent_logits: Tensor,
    sub_logits: Tensor,
    parent_labels: Tensor,
    sub_labels: Tensor,
    *,
    sub_weight: float = SC_CAM_DEFAULTS["sub_weight"],
    loss: str = "multilabel_soft_margin",
) -> Dict[str, Tensor]:
    """L = L_parent + sub_weight · L_sub (``train_cls.py``).

    Args:
        parent_logits (Tensor): (B, K).
        sub_logits (Tensor): (B, K·k).
        parent_labels (Tensor): (B, K).
        sub_labels (Tensor): (B, K·k), rows of `SubCategories.labels`.
        sub_weight (float): 5 in SC-CAM.
        loss (str): "multilabel_soft_margin" (SC-CAM, VOC) or "cross_entropy" (single-label
            data such as the Pets breeds; targets normalised to sum 1).

    Returns:
        Dict[str, Tensor]: {"loss", "parent", "sub"}.
    """
    if parent_logits.shape != parent_labels.shape or sub_logits.shape != sub_labels.shape:
        raise ValueError(
            f"sc_cam_loss: logits/labels shapes differ: parent {tuple(parent_logits.shape)} vs "
            f"{tuple(parent_labels.shape)}, sub {tuple(sub_logits.shape)} vs "
            f"{tuple(sub_labels.shape)}"
        )
    parent = _multilabel_or_softmax(parent_logits, parent_labels, loss)
    sub = _multilabel_or_softmax(sub_logits, sub_labels, loss)
    return {"loss": parent + sub_weight * sub, "parent": parent, "sub": sub}


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    temperature: float = SC_CAM_DEFAULTS["kd_temperature"],
    mode: str = "sigmoid",
) -> Tensor:
    """T² · KL(teacher_T ‖ student_T) on logits softened by T (Hinton et al. 2015).

    "sigmoid" (multi-label): per class the Bernoulli KL between p = σ(t / T) and q = σ(s / T),
    averaged over batch and classes. "softmax" (single-label): KL between softmax(t / T) and
    softmax(s / T), summed over classes, averaged over the batch. 0 when the logits agree; the
    teacher is detached.

    Args:
        student_logits (Tensor): (B, K).
        teacher_logits (Tensor): (B, K), e.g. the previous round's parent logits.
        temperature (float): T > 0.
        mode (str): "sigmoid" or "softmax".

    Returns:
        Tensor: scalar.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"distillation_loss: student {tuple(student_logits.shape)} and teacher "
            f"{tuple(teacher_logits.shape)} differ"
        )
    if temperature <= 0:
        raise ValueError(f"distillation_loss: temperature must be > 0, got {temperature}")
    s = student_logits / temperature
    t = teacher_logits.detach() / temperature
    if mode == "sigmoid":
        p = torch.sigmoid(t)
        # KL(p‖q) = p(log p − log q) + (1−p)(log(1−p) − log(1−q)); logsigmoid keeps it stable
        kl = p * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p) * (
            F.logsigmoid(-t) - F.logsigmoid(-s)
        )
        return temperature**2 * kl.mean()
    if mode == "softmax":
        kl = F.kl_div(
            F.log_softmax(s, dim=1), F.log_softmax(t, dim=1), reduction="batchmean", log_target=True
        )
        return temperature**2 * kl
    raise ValueError(f"distillation_loss: mode must be 'sigmoid' or 'softmax', got {mode!r}")


@dataclass
class RoundRecord:
    """One SC-CAM round: its index (1-based), its sub-category labels and the trained model."""

    round: int
    subcategories: SubCategories
    model: Any


def run_rounds(
    initial_model: Any,
    *,
    extract: Callable[[Any], Tuple[Tensor, Tensor]],
    train: Callable[[int, SubCategories, Optional[Any]], Any],
    generator: torch.Generator,
    rounds: int = SC_CAM_DEFAULTS["rounds"],
    k: int = SC_CAM_DEFAULTS["k"],
    distill: bool = SC_CAM_DEFAULTS["distill"],
    n_init: int = SC_CAM_DEFAULTS["kmeans_n_init"],
    max_iter: int = SC_CAM_DEFAULTS["kmeans_max_iter"],
) -> List[RoundRecord]:
    """The SC-CAM rounds: extract → cluster → train, each round's model extracting for the next.

    Args:
        initial_model: the round-0 extractor (a plain CAM classifier).
        extract (Callable): model → (features (N, D), cls_labels (N, K)) over the training set.
        train (Callable): (round, sub-categories, teacher) → trained model. The official code
            re-initialises each round from the ImageNet weights; ``teacher`` is the previous
            round's model when ``distill`` is on, else None.
        generator (torch.Generator): seeds the clustering of every round.
        rounds (int): ≥ 1.
        k, n_init, max_iter: see `subcategory_labels`.
        distill (bool): pass the previous model as teacher.

    Returns:
        List[RoundRecord]: one per round; the last model is the result.
    """
    if rounds < 1:
        raise ValueError(f"run_rounds: rounds must be >= 1, got {rounds}")
    records: List[RoundRecord] = []
    previous = initial_model
    for r in range(1, rounds + 1):
        feats, cls_labels = extract(previous)
        subcats = subcategory_labels(
            feats, cls_labels, k=k, generator=generator, n_init=n_init, max_iter=max_iter
        )
        model = train(r, subcats, previous if distill else None)
        records.append(RoundRecord(round=r, subcategories=subcats, model=model))
        previous = model
    return records
