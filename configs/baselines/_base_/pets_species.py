# Oxford-IIIT Pet, 2 species (cat, dog), in the VOC layout written by
#   python tools/prepare_pets.py --pets-root data/oxford-iiit-pet --out data/pets_species --labels species
# Names: weclip.data.pets.class_names("species") / prompt_names("species") (a test checks they agree).
_base_ = ["../../_base_/datasets/common.py"]
# fmt: off
data = dict(
    name="Pets-species",  # dataset name in reports
    type="folder",
    root="data/pets_species",  # JPEGImages/, SegmentationClass/ (0 bg, class id on the pet, 255 on the border)
    split_dir="data/pets_species",  # train.txt / val.txt (a seeded split of trainval), trainval.txt, test.txt
    label_file="cls_labels.txt",
    mask_dir="SegmentationClass",
    train_split="train",
    val_split="val",  # the official test split: tools/infer.py --split test
    mask_free_splits=(),  # every Pet split has trimap masks
    num_classes=3,
    class_names=("background", "cat", "dog"),
    prompt_class_names=("cat", "dog"),
    # No background prompt list comes with the dataset: WeCLIP's VOC list (spec §2), indoor/outdoor scenes.
    prompt_bg_names=(
        "ground", "land", "grass", "tree", "building", "wall", "sky", "lake", "water", "river", "sea",
        "railway", "railroad", "keyboard", "helmet", "cloud", "house", "mountain", "ocean", "road", "rock",
        "street", "valley", "bridge", "sign",
    ),
)
# fmt: on
