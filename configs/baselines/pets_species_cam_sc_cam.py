# Oxford-IIIT Pet (species), stage 1 with SC-CAM, one round per run (k = 10, sub-category weight 5); round 1 clusters with the plain classifier.
#   python tools/train.py configs/baselines/pets_species_cam_sc_cam.py
#   python tools/sweep_cams.py configs/baselines/pets_species_cam_sc_cam.py work_dirs/pets_species_cam_sc_cam/checkpoints/iter_*.pth --split train
# Round 1 needs configs/baselines/pets_species_cam.py trained first; round r > 1 points at round r - 1:
#   python tools/train.py configs/baselines/pets_species_cam_sc_cam.py --work-dir work_dirs/pets_species_cam_sc_cam_r2 \
#       --cfg-options model.method.sc_cam.previous=work_dirs/pets_species_cam_sc_cam/checkpoints/iter_1030.pth
_base_ = ["./pets_species_cam.py"]
model = dict(method=dict(type="sc_cam", sc_cam=dict(previous="work_dirs/pets_species_cam/checkpoints/iter_1030.pth")))
