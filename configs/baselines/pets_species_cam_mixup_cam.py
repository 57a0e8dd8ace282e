# Oxford-IIIT Pet (species), stage 1 with Mixup-CAM (mixup + entropy / concentration losses; phase-1 defaults, not verified against the paper).
#   python tools/train.py configs/baselines/pets_species_cam_mixup_cam.py
#   python tools/sweep_cams.py configs/baselines/pets_species_cam_mixup_cam.py work_dirs/pets_species_cam_mixup_cam/checkpoints/iter_*.pth --split train
_base_ = ["./pets_species_cam.py"]
model = dict(method=dict(type="mixup_cam"))
