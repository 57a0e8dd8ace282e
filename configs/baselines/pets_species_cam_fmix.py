# Oxford-IIIT Pet (species), stage 1 with FMix-CAM (Fourier masks, alpha 1, decay power 3: the FMix code; labels by mask area).
#   python tools/train.py configs/baselines/pets_species_cam_fmix.py
#   python tools/sweep_cams.py configs/baselines/pets_species_cam_fmix.py work_dirs/pets_species_cam_fmix/checkpoints/iter_*.pth --split train
_base_ = ["./pets_species_cam.py"]
model = dict(method=dict(type="fmix"))
