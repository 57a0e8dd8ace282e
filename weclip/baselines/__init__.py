"""The classic multi-stage CNN pipeline for weakly supervised segmentation, as library modules.

Classifier -> CAMs -> refinement -> pseudo-masks -> second-stage segmentation network, plus box
supervision and the fully supervised upper bound (docs/baselines.md). Every module works on
batch-first tensors of already normalised images and is independent of the WeCLIP model, so thin
model wrappers can combine them.

* ``resnet``: torchvision ResNet trunks with a configurable output stride (local weights only).
* ``classifier``: CAM classifier (ResNet + GAP + 1x1 head) and the U-Net CAM classifier; losses.
* ``cam``: CAM -> pseudo-mask (background threshold / power), multi-scale + flip, sweeps.
* ``region_growing``: growth of CAM seeds in feature space.
* ``affinitynet``: AffinityNet (Ahn & Kwak, CVPR 2018): labels, head, loss, random walk.
* ``box_seeds``: Gaussian heat maps in boxes -> seeds.
* ``segnet``: U-Net and DeepLabV3-ResNet50; CE and focal losses.
* ``weights``: reading local state dicts with clear errors.
* ``cam_methods``: CAM-improvement methods for the classifier's training (Mixup-CAM, Manifold Mixup,
  FMix, SC-CAM, SEAM, Pixel-to-Prototype; docs/cam_methods.md).
"""
