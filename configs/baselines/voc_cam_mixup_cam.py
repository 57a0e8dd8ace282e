# PASCAL VOC 2012, stage 1 with Mixup-CAM (mixup + entropy / concentration losses; phase-1 defaults, not verified against the paper).
#   python tools/train.py configs/baselines/voc_cam_mixup_cam.py
#   python tools/sweep_cams.py configs/baselines/voc_cam_mixup_cam.py work_dirs/voc_cam_mixup_cam/checkpoints/iter_*.pth --split train
_base_ = ["./voc_cam.py"]
model = dict(method=dict(type="mixup_cam"))
