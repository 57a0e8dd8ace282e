# Mixup-CAM (Chang et al., BMVC 2020) on the toy world: configs/baselines/toy_cam.py's classifier and schedule,
# trained on mixed images / labels with the entropy and concentration losses (docs/cam_methods.md).
#   python tools/train.py configs/baselines/toy_cam_mixup_cam.py --device cpu
#   python tools/sweep_cams.py configs/baselines/toy_cam_mixup_cam.py work_dirs/toy_cam_mixup_cam/checkpoints/iter_*.pth
_base_ = ["./toy_cam.py"]
# alpha 1, entropy and concentration weights 1: the phase-1 defaults (not verified against the paper)
model = dict(method=dict(type="mixup_cam"))
