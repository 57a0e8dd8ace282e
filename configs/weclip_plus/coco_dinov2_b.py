# WeCLIP+ on COCO with CLIP ViT-B/16 + DINOv2 ViT-B/14 (`dinov2_vitb14`, doc §2.1); otherwise coco_dinov2_s.py.
#   tools/dist_train.sh configs/weclip_plus/coco_dinov2_b.py 4
_base_ = ["./coco_dinov2_s.py"]
model = dict(
    dino=dict(arch="dinov2_vitb14", weights="pretrained/dinov2_vitb14_pretrain.pth"),
    decoder=dict(num_layers=3),  # doc §3.2
)
