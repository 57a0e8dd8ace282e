# Fully supervised upper bound on VOC: the same DeepLabV3-ResNet50 on the train_aug ground truth.
#   python tools/train.py configs/baselines/voc_deeplabv3_gt.py
_base_ = ["./voc_deeplabv3.py"]
model = dict(type="FullySupervisedSegNet")
data = dict(train_mask_dir="SegmentationClassAug")
