# WeCLIP+ on COCO with CLIP ViT-B/16 + DINOv2 ViT-L/14 (`dinov2_vitl14`, doc §2.1); otherwise coco_dinov2_s.py.
#   tools/dist_train.sh configs/weclip_plus/coco_dinov2_l.py 4
_base_ = ["./coco_dinov2_s.py"]
model = dict(
    dino=dict(arch="dinov2_vitl14", weights="pretrained/dinov2_vitl14_pretrain.pth"),
    decoder=dict(num_layers=5),  # doc §3.2
)
