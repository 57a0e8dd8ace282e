# Second stage on VOC: DeepLabV3-ResNet50 on AffinityNet's exported pseudo-masks of train_aug.
#   python tools/train.py configs/baselines/voc_deeplabv3.py
#   python tools/infer.py configs/baselines/voc_deeplabv3.py work_dirs/voc_deeplabv3/checkpoints/iter_20000.pth
_base_ = ["./_base_/deeplabv3.py", "../_base_/datasets/voc12.py"]
data = dict(crop_size=448, scale_range=(0.5, 2.0), train_mask_dir="pseudo_masks/rw")
