# Stage 2 of the CNN baseline on the toy world: AffinityNet learns pixel affinities from the confident regions of
# the stage-1 classifier's CAMs (frozen, read from its checkpoint) and refines them by a random walk.
#   python tools/train.py configs/baselines/toy_affinitynet.py --device cpu \
#       --cfg-options model.cam_checkpoint=work_dirs/toy_cam/checkpoints/iter_1500.pth
#   python tools/eval_pseudo.py configs/baselines/toy_affinitynet.py CKPT --split train --rows rw \
#       --export-dir data/toy/pseudo_masks                       # the second stage's targets
_base_ = ["../toy.py"]

model = dict(
    _delete_=True,
    type="AffinityNet",
    cam_checkpoint="work_dirs/toy_cam/checkpoints/iter_1500.pth",  # tools/baseline_pipeline.py passes its own
    seeds="cams",
    resnet=dict(
        arch="resnet18",
        weights="cam",  # start from the classifier's trunk: no ImageNet weights on the toy world
        base_width=8,  # = the classifier's (needed by weights="cam")
        # No stem pool: the affinity grid at stride 4 (28x28 on 112 px images), fine enough for 30-60 px shapes.
        stem_pool=False,
    ),
    head=dict(
        mid_channels=(16, 32, 64), out_channels=112
    ),  # psa's 64/128/256 -> 448, scaled like the trunk
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
