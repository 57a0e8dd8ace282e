# PASCAL VOC 2012, stage 1 with FMix-CAM (Fourier masks, alpha 1, decay power 3: the FMix code; labels by mask area).
#   python tools/train.py configs/baselines/voc_cam_fmix.py
#   python tools/sweep_cams.py configs/baselines/voc_cam_fmix.py work_dirs/voc_cam_fmix/checkpoints/iter_*.pth --split train
_base_ = ["./voc_cam.py"]
model = dict(method=dict(type="fmix"))
