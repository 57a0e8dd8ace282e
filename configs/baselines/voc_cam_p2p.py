# PASCAL VOC 2012, stage 1 with Pixel-to-prototype contrast (SEAM + a 128 x 128 second view + cross / intra-view InfoNCE, weights 0.1).
#   python tools/train.py configs/baselines/voc_cam_p2p.py
#   python tools/sweep_cams.py configs/baselines/voc_cam_p2p.py work_dirs/voc_cam_p2p/checkpoints/iter_*.pth --split train
_base_ = ["./voc_cam.py"]
model = dict(method=dict(type="p2p"))
