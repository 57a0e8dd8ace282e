# Oxford-IIIT Pet, 37 breeds, in the VOC layout written by
#   python tools/prepare_pets.py --pets-root data/oxford-iiit-pet --out data/pets_breeds --labels breeds
# Names: weclip.data.pets.class_names("breeds") / prompt_names("breeds") (a test checks they agree).
_base_ = ["./pets_species.py"]
# fmt: off
data = dict(
    name="Pets-breeds",
    root="data/pets_breeds",
    split_dir="data/pets_breeds",
    num_classes=38,
    class_names=(
        "background", "Abyssinian", "american_bulldog", "american_pit_bull_terrier", "basset_hound", "beagle",
        "Bengal", "Birman", "Bombay", "boxer", "British_Shorthair", "chihuahua", "Egyptian_Mau",
        "english_cocker_spaniel", "english_setter", "german_shorthaired", "great_pyrenees", "havanese",
        "japanese_chin", "keeshond", "leonberger", "Maine_Coon", "miniature_pinscher", "newfoundland", "Persian",
        "pomeranian", "pug", "Ragdoll", "Russian_Blue", "saint_bernard", "samoyed", "scottish_terrier",
        "shiba_inu", "Siamese", "Sphynx", "staffordshire_bull_terrier", "wheaten_terrier", "yorkshire_terrier",
    ),
    prompt_class_names=(
        "Abyssinian", "american bulldog", "american pit bull terrier", "basset hound", "beagle", "Bengal",
        "Birman", "Bombay", "boxer", "British Shorthair", "chihuahua", "Egyptian Mau", "english cocker spaniel",
        "english setter", "german shorthaired", "great pyrenees", "havanese", "japanese chin", "keeshond",
        "leonberger", "Maine Coon", "miniature pinscher", "newfoundland", "Persian", "pomeranian", "pug",
        "Ragdoll", "Russian Blue", "saint bernard", "samoyed", "scottish terrier", "shiba inu", "Siamese",
        "Sphynx", "staffordshire bull terrier", "wheaten terrier", "yorkshire terrier",
    ),
)
# fmt: on
