"""What a network is built from and what its outputs mean, as one value decided before the build."""
import dataclasses
from dataclasses import dataclass
from typing import List, Optional, Tuple


@dataclass(frozen=True)
class ModelSpec:
    """The model's architecture and its classes and anchors: from the config, then (train.py) the training set and
    the fitted anchors, or (eval, predict, export, fine-tuning) what the weights were trained with. Built once and
    passed to the network builder, the loss, the targets, the decode and the checkpoint writer."""
    model_name: str
    backbone_layers: List[int]
    num_classes: int
    labels: List[str]
    coco_ids: List[int]
    anchor_scales: List[List[int]]
    anchor_mask: List[List[int]]
    input_centering: bool

    @classmethod
    def from_config(cls, config) -> "ModelSpec":
        return cls(**{field.name: getattr(config, field.name) for field in dataclasses.fields(cls)})

    def replace(self, **changes) -> "ModelSpec":
        return dataclasses.replace(self, **changes)

    def categories(self) -> Tuple[Optional[List[int]], Optional[List[str]]]:
        """The category id and name of each label (converted darknet weights: the config's, COCO's); either is None
        when it does not cover every label."""
        n = self.num_classes
        ids = [int(i) for i in self.coco_ids] if len(self.coco_ids) == n else None
        names = [str(x) for x in self.labels] if len(self.labels) == n else None
        return ids, names
