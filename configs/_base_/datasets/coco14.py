# MS COCO 2014 in the VOC-style layout written by tools/prepare_coco.py (spec §2, §10).
_base_ = ["./common.py"]
_coco_names = (
    "person", "bicycle", "car", "motorbike", "aeroplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "sofa",
    "pottedplant", "bed", "diningtable", "toilet", "tvmonitor", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)
# `new_class_names_coco` (spec §2): the plain list with 13 prompted replacements.
_prompted = {
    "person": "person with clothes,people,human", "bird": "bird avian", "backpack": "backpack,bag",
    "umbrella": "umbrella,parasol", "handbag": "handbag,purse", "tie": "necktie",
    "snowboard": "sknowboard",  # sic: the authors' typo, kept for fidelity (spec §2)
    "baseball glove": "glove", "spoon": "dessertspoon", "chair": "chair seat", "tvmonitor": "tvmonitor screen",
    "remote": "remote control", "hair drier": "hairdrier,blowdrier",
}
data = dict(
    name="COCO",  # dataset name in reports
    type="coco",  # the VOC layout with train/ and val/ levels (weclip/data/coco.py)
    root="data/MSCOCO",  # holds JPEGImages/{train,val}/ and SegmentationClass/{train,val}/ (spec §10)
    split_dir="datasets/coco",
    label_file="cls_labels.txt",  # "<name> <id> <id> ..." with 0-based foreground ids (in split_dir)
    mask_dir="SegmentationClass",  # SegmentationClass/{train,val}/<12-digit id>.png (tools/prepare_coco.py)
    train_split="train",  # 82,081 images with >= 1 class (spec §10)
    val_split="val",  # 40,137 val images with >= 1 annotation (spec §10); prepare_coco --val-images all: 40,504
    num_classes=81,  # incl. background
    class_names=("background",) + _coco_names,  # ids 0..80 in the VOC-style order of spec §2
    prompt_class_names=tuple(_prompted.get(n, n) for n in _coco_names),
    # 23 background prompts: the VOC list minus "keyboard" and "sign" (spec §2).
    prompt_bg_names=(
        "ground", "land", "grass", "tree", "building", "wall", "sky", "lake", "water", "river", "sea",
        "railway", "railroad", "helmet", "cloud", "house", "mountain", "ocean", "road", "rock", "street",
        "valley", "bridge",
    ),
)
del _coco_names, _prompted  # helpers only; keep them out of the resolved config
