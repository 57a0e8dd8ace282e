# Stage 1 on PASCAL VOC 2012 (train_aug): ResNet-50 CAM classifier, multi-label BCE (IRN's CAM network).
#   python tools/train.py configs/baselines/voc_cam.py
#   python tools/sweep_cams.py configs/baselines/voc_cam.py work_dirs/voc_cam/checkpoints/iter_*.pth --split train
_base_ = ["./_base_/cam_resnet50.py", "../_base_/datasets/voc12.py"]
# IRN: 512 crops of images resized to 320-640 long sides
data = dict(crop_size=512, scale_range=(0.5, 1.5))
# 5 epochs of the 10,582 images at batch 16; one per epoch
train = dict(max_iters=3310, ckpt_interval=662)
