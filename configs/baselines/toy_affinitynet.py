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
    radius=5,  # psa's gamma
)
loss = dict(_delete_=True)  # psa's weights 1/4, 1/4, 1/2

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
