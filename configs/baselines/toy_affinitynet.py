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
    # Confident regions of the classifier's CAMs on each training crop: the paper's recipe (psa's powers 4 / 32, a
    # dense CRF on each score map; model.labels.crf). Without the CRF psa's powers (= thresholds 0.28 / 0.08) left
    # confident foreground 35% right on the first 100 toy train images; the CRF snaps it to the shapes' edges. At CI
    # size (first 200 train images, 300 steps, walk t = 0.5 for 8 steps) these labels walk to 34.6 mIoU, the former
    # CAM > 0.7 / < 0.3 without CRF to 32.6 (CAM 32.8).
    labels=dict(mode="power", fg_value=4.0, bg_value=32.0, crf=True, scales=(1.0,), flip=False),
    # The walk: psa's beta 8 on [t; CAMs], the walked CAMs max-normalised again; t and the length fixed here, not
    # psa's t = 256 with background power 16 nor the sweep's threshold: the walk spreads the CAMs, and the
    # affinities of this budget leak across borders on long walks. Measured with the CRF labels (first 300 toy
    # train images, the CAMs at the sweep's 0.5: 49.5, at 0.6: 49.9; docs/baselines.md): t = 0.5 for 8 / 16 / 64
    # steps 45.1 / 43.9 / 41.3 after 2,000 training steps; t = 0.8 for 8 steps 51.5 (this config, 600 steps),
    # 51.4 (2,000); 16 steps 50.7; t = 0.9 50.3.
    walk=dict(beta=8.0, num_iters=8, bg_mode="threshold", bg_value=0.8),
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
