# Stage 2 of the CNN baseline on the toy world: AffinityNet learns pixel affinities from the confident regions of
# the stage-1 classifier's CAMs (frozen, read from its checkpoint) and refines them by a random walk.
#   python tools/train.py configs/baselines/toy_affinitynet.py --device cpu \
#       --cfg-options model.cam_checkpoint=work_dirs/toy_cam/checkpoints/iter_1500.pth
#   python tools/eval_pseudo.py configs/baselines/toy_affinitynet.py CKPT --split train --rows rw \
#       --export-dir data/toy/pseudo_masks          # the second stage's targets
_base_ = ["../toy.py"]

model = dict(
    _delete_=True,
    type="AffinityNet",
    # the stage-1 run (tools/baseline_pipeline.py passes its own: the sweep's best checkpoint)
    cam_checkpoint="work_dirs/toy_cam/checkpoints/iter_1500.pth",
    seeds="cams",
    resnet=dict(
        arch="resnet18",
        # start from the classifier's trunk (same arch and width): no ImageNet weights on the toy world
        weights="cam",
        base_width=8,
        # no stem pool: the affinity grid at stride 4 (28x28 on 112 px images) for 30-60 px shapes
        stem_pool=False,
    ),
    # psa's 64/128/256 -> 448 at 1/8 (the trunk's width) and 32 affinity channels: the pair differences of a
    # 28x28 grid cost (batch x channels x 34 offsets x 784 cells), 112 channels made a step ~10x slower
    head=dict(mid_channels=(8, 16, 32), out_channels=32),
    # psa's gamma, mean L1 over channels and pairs from interior cells (their code)
    radius=5,
    reduction="mean",
    interior_only=True,
    # Confident regions of the classifier's CAMs on each training crop. psa's background powers 4 / 32 equal
    # thresholds 0.28 / 0.08, far below these CAMs' best threshold (0.5): on the first 100 toy train images their
    # confident foreground is 35% right (and 2.2x the objects' area), CAM > 0.7 is 73% right, CAM < 0.3 95%.
    labels=dict(mode="threshold", fg_value=0.7, bg_value=0.3, scales=(1.0,), flip=False),
    # The walk: psa's beta 8 on [t; CAMs], t = the sweep's threshold (tools/baseline_pipeline.py passes it), the
    # walked CAMs max-normalised again. Measured (100 toy train images, CAM 49.0): psa's background power 16
    # gives 38.5, the threshold 0.5 44.1 with 256 steps and 46.4 with 64 (fewer steps, less leakage).
    walk=dict(beta=8.0, num_iters=64, bg_mode="threshold", bg_value=0.5),
)
loss = dict(_delete_=True)  # psa's weights 1/4, 1/4, 1/2

# no rescaling, as the classifier was trained (its CAMs of rescaled crops are worse)
data = dict(scale_range=(1.0, 1.0))
optim = dict(lr=2e-3, head_lr_mult=1.0, weight_decay=0.0)
sched = dict(warmup_iters=50)
train = dict(
    max_iters=600,
    batch_size=8,
    num_workers=0,
    log_interval=50,
    vis_interval=0,
    ckpt_interval=600,
    eval_interval=0,
    eval_split="val",
)
test = dict(resize_long=None, scales=(1.0,), flip=False)
