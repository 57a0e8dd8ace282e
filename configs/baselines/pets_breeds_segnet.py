# Second stage on Oxford-IIIT Pet (breeds): U-Net on AffinityNet's exported pseudo-masks.
#   python tools/train.py configs/baselines/pets_breeds_segnet.py
_base_ = ["./_base_/unet.py", "./_base_/pets_breeds.py"]
data = dict(crop_size=320, scale_range=(0.5, 1.5), train_mask_dir="pseudo_masks/rw")
