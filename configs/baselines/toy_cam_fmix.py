# FMix-CAM on the toy world: Fourier masks (Harris et al., 2020) mix the images, labels mixed by the mask area;
# configs/baselines/toy_cam.py's classifier and schedule.
#   python tools/train.py configs/baselines/toy_cam_fmix.py --device cpu
#   python tools/sweep_cams.py configs/baselines/toy_cam_fmix.py work_dirs/toy_cam_fmix/checkpoints/iter_*.pth
_base_ = ["./toy_cam.py"]
# alpha 1, decay power 3, binary masks: FMix's code; no Mixup-CAM regularisers (ent/con weights 0)
model = dict(method=dict(type="fmix"))
