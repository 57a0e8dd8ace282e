# Fully supervised upper bound on Oxford-IIIT Pet (breeds): the second stage's U-Net on the trimap masks.
#   python tools/train.py configs/baselines/pets_breeds_segnet_gt.py
_base_ = ["./pets_breeds_segnet.py"]
model = dict(type="FullySupervisedSegNet")
data = dict(train_mask_dir="SegmentationClass")
