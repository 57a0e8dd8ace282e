# WeCLIP on MS COCO 2014 (spec §8 COCO column).
#   tools/dist_train.sh configs/coco.py 4
_base_ = [
    "_base_/models/weclip_vitb16.py",
    "_base_/datasets/coco14.py",
    "_base_/schedules/adamw_poly.py",
    "_base_/default_runtime.py",
]
model = dict(
    refine=dict(
        rfm_layers=10,  # last 10 attention maps (spec §4.2)
        rfm_start_iter=40001,  # counter > 40,000; COCO training runs no validation, so no shift (spec §4.2)
        box_threshold=0.7,  # spec §4.5
    ),
)
train = dict(
    max_iters=80000,  # spec §8
    eval_interval=0,  # the authors run no in-training validation on COCO (spec §8); 0 = off
    ckpt_interval=10000,  # spec §8
)
