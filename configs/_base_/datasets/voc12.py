# PASCAL VOC 2012 + SBD (spec §2 class/background names, §10 layout).
_base_ = ["./common.py"]
data = dict(
    name="VOC",  # dataset name in reports
    type="folder",  # the VOC folder layout (weclip/data/dataset.py)
    root="data/VOCdevkit/VOC2012",  # relative to the working directory; holds JPEGImages/, SegmentationClassAug/
    split_dir="datasets/voc",  # split lists and the image-level label file written by tools/prepare_voc.py
    label_file="cls_labels.txt",  # "<name> <id> <id> ..." with 0-based foreground ids (in split_dir)
    mask_dir="SegmentationClassAug",  # VOC masks + SBD masks (built by tools/prepare_voc.py when missing)
    train_split="train_aug",  # 10,582 images (spec §8)
    val_split="val",  # 1,449 images (spec §10)
    num_classes=21,  # incl. background (spec notation C)
    # Plain names (index = class id), used in metric tables.
    class_names=(
        "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
        "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
        "tvmonitor",
    ),
    # Prompted foreground names (index = class id - 1), synonyms inside one prompt (spec §2, `new_class_names`).
    prompt_class_names=(
        "aeroplane", "bicycle", "bird avian", "boat", "bottle", "bus", "car", "cat", "chair seat", "cow",
        "diningtable", "dog", "horse", "motorbike", "person with clothes,people,human", "pottedplant",
        "sheep", "sofa", "train", "tvmonitor screen",
    ),
    # 25 background prompts (spec §2).
    prompt_bg_names=(
        "ground", "land", "grass", "tree", "building", "wall", "sky", "lake", "water", "river", "sea",
        "railway", "railroad", "keyboard", "helmet", "cloud", "house", "mountain", "ocean", "road", "rock",
        "street", "valley", "bridge", "sign",
    ),
)
