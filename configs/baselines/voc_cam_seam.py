# PASCAL VOC 2012, stage 1 with SEAM (0.3 rescaled second view, PCM on layer2 / layer3 (ResNet-50: 512 / 1024 channels, as ResNet-38's conv4 / conv5), ER + ECR + rvmin).
#   python tools/train.py configs/baselines/voc_cam_seam.py
#   python tools/sweep_cams.py configs/baselines/voc_cam_seam.py work_dirs/voc_cam_seam/checkpoints/iter_*.pth --split train
_base_ = ["./voc_cam.py"]
model = dict(method=dict(type="seam"))
