"""The PASCAL VOC class list: one place, SPEC order, shared by data, models and trainer."""

# Index i in these tuples is logit i + 1 of a model: logit 0 is `__background__`,
# never positive and left out of every metric (docs/SPEC.md).
CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
NUM_CLASSES: int = len(CLASSES)  # 20 object classes
NUM_LOGITS: int = NUM_CLASSES + 1  # + __background__ at index 0
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}

# ImageNet statistics: every model here (pretrained or not) sees inputs normalized this way.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
