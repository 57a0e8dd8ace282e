# PASCAL VOC 2012, stage 1 with Manifold Mixup (input / after layer1 / after layer2, alpha 2: the Manifold Mixup code).
#   python tools/train.py configs/baselines/voc_cam_manifold_mixup.py
#   python tools/sweep_cams.py configs/baselines/voc_cam_manifold_mixup.py work_dirs/voc_cam_manifold_mixup/checkpoints/iter_*.pth --split train
_base_ = ["./voc_cam.py"]
model = dict(method=dict(type="manifold_mixup"))
