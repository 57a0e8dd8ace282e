# WeCLIP on PASCAL VOC 2012 (train_aug), the paper setting (spec §8).
#   1 GPU:  python tools/train.py configs/voc.py
#   4 GPUs: tools/dist_train.sh configs/voc.py 4      (total batch stays 4: 1 image per GPU)
_base_ = [
    "_base_/models/weclip_vitb16.py",
    "_base_/datasets/voc12.py",
    "_base_/schedules/adamw_poly.py",
    "_base_/default_runtime.py",
]
