# The fully supervised upper bound on the toy world: the second stage's FCN, same schedule, on the ground truth.
#   python tools/train.py configs/baselines/toy_segnet_gt.py --device cpu
_base_ = ["./toy_segnet.py"]

data = dict(train_mask_dir="SegmentationClassAug")  # = data.mask_dir: the ground-truth masks
model = dict(type="FullySupervisedSegNet")
