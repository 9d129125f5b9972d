"""COCO-format training data: reading, augmentation and targets, fed through GeneratorDataset.

One item of the GeneratorDataset is one whole batch, so that every image of a
batch shares the input size that multi-scale training picked for that
iteration (a new size from 320..608 every `resize_rate` iterations).
"""
import os
import warnings
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from src.data.augment import clip_boxes, hflip, hsv, jitter, letterbox_boxes, mosaic
from src.data.coco import category_ids, load_coco
from src.data.sampler import DistributedSampler
from src.data.targets import build_targets
from src.errors import UserError
from src.models.spec import ModelSpec

MULTI_SCALES = tuple(range(320, 609, 32))


class CocoTrainSet:
    """Images with their boxes (x1, y1, x2, y2 pixels) and 0-based labels.

    Crowd boxes are ignored, zero-size boxes dropped and counted, images
    without boxes left out; category ids map to labels in sorted order.
    """

    def __init__(self, ann_file: str, image_dir: str):
        if not os.path.isdir(image_dir):
            raise UserError(f"training image directory not found: {image_dir}")
        coco = load_coco(ann_file)
        self.coco, self.ann_file = coco, ann_file
        self.cat_ids = category_ids(coco)
        self.names = [coco.cats[c].get("name", str(c)) for c in self.cat_ids]
        label_of = {c: i for i, c in enumerate(self.cat_ids)}
        self.records: List[Tuple[str, np.ndarray, np.ndarray]] = []
        self.zero_size_boxes = 0
        self.images_without_boxes = 0
        for img_id in sorted(coco.imgs):
            boxes, labels = [], []
            for a in coco.imgToAnns.get(img_id, []):
                if a.get("iscrowd", 0):
                    continue
                x, y, w, h = _bbox(a, ann_file)
                if a.get("category_id") not in label_of:
                    raise UserError(f"{ann_file}: annotation {_describe(a)} has category_id "
                                    f"{a.get('category_id')!r}, which is not in 'categories' "
                                    f"({', '.join(map(str, self.cat_ids))})")
                if w <= 0 or h <= 0:
                    self.zero_size_boxes += 1
                    continue
                boxes.append([x, y, x + w, y + h])
                labels.append(label_of[a["category_id"]])
            if not boxes:
                self.images_without_boxes += 1
                continue
            self.records.append((os.path.join(image_dir, coco.imgs[img_id]["file_name"]),
                                 np.array(boxes, np.float32), np.array(labels, np.int64)))
        if not self.records:
            raise UserError(f"{ann_file} has no images with boxes to train on")

    def __len__(self) -> int:
        return len(self.records)

    def order_classes(self, cat_ids: List[int]) -> None:
        """Make label k the category cat_ids[k] (an order of the same category ids)."""
        new_label = {c: k for k, c in enumerate(cat_ids)}
        relabel = np.array([new_label[c] for c in self.cat_ids], np.int64)
        self.names = [self.names[self.cat_ids.index(c)] for c in cat_ids]
        self.cat_ids = list(cat_ids)
        self.records = [(path, boxes, relabel[labels]) for path, boxes, labels in self.records]

    def load(self, index: int) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
        path, boxes, labels = self.records[index]
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            warnings.warn(f"skipping unreadable or missing training image {path}", stacklevel=2)
            return None
        return img, boxes, labels


def _describe(ann: dict) -> str:
    return f"id {ann['id']!r}" if "id" in ann else f"of image {ann.get('image_id')!r}"


def _bbox(ann: dict, ann_file: str) -> Tuple[float, float, float, float]:
    """An annotation's [x, y, w, h]; anything else is a UserError naming the file and the annotation."""
    box = ann.get("bbox")
    if (not isinstance(box, (list, tuple)) or len(box) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)):
        raise UserError(f"{ann_file}: annotation {_describe(ann)} has no bbox [x, y, w, h] (got {box!r})")
    return tuple(float(v) for v in box)


def train_shape(fixed: int, seed: int, iteration: int, resize_rate: int) -> int:
    """The input size of a training iteration: `fixed`, or a seeded pick from 320..608."""
    if fixed:
        return fixed
    rng = np.random.default_rng((seed, 7919, iteration // max(1, resize_rate)))
    return int(rng.choice(MULTI_SCALES))


class BatchSource:
    """Random-access source of whole augmented batches for one epoch of one rank."""

    def __init__(self, data: CocoTrainSet, indices: Sequence[int], config, spec: ModelSpec, epoch: int):
        self.data = data
        self.indices = list(indices)
        self.cfg = config
        self.spec = spec
        self.epoch = epoch
        self.batch_size = config.per_batch_size
        self.steps_per_epoch = len(self.indices) // self.batch_size

    def __len__(self) -> int:
        return self.steps_per_epoch

    def _load_any(self, index: int, rng: np.random.Generator):
        """The sample at data set `index`, or (a damaged image) another random one."""
        for attempt in range(10):
            index = index if attempt == 0 else int(rng.integers(len(self.data)))
            sample = self.data.load(index)
            if sample is not None:
                return sample
        raise UserError("ten unreadable training images in a row: check the image directory")

    def sample(self, index: int, size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Data set image `index` augmented: (image BGR uint8 size x size, boxes, labels).

        Seeded by (seed, epoch, index), so an image gets the same augmentation
        whichever rank or batch position it lands in."""
        c = self.cfg
        rng = np.random.default_rng((c.seed, self.epoch, index))
        if c.mosaic:
            parts = [self._load_any(index, rng)] + [self._load_any(int(rng.integers(len(self.data))), rng)
                                                    for _ in range(3)]
            img, boxes, labels = mosaic(parts, size, rng)
        else:
            img, boxes, labels = self._load_any(index, rng)
            if c.jitter > 0:
                img, boxes = jitter(img, boxes, size, rng, c.jitter, c.jitter_scale)
            else:
                img, boxes = letterbox_boxes(img, boxes, size)
        if rng.random() < 0.5:
            img, boxes = hflip(img, boxes)
        img = hsv(img, rng, c.hue, c.saturation, c.value)
        boxes, labels = clip_boxes(boxes, labels, size, size)
        return img, boxes, labels

    def __getitem__(self, b: int) -> Tuple[np.ndarray, ...]:
        iteration = self.epoch * self.steps_per_epoch + b
        size = train_shape(self.cfg.training_shape, self.cfg.seed, iteration, self.cfg.resize_rate)
        images, targets = [], []
        for position in range(b * self.batch_size, (b + 1) * self.batch_size):
            img, boxes, labels = self.sample(self.indices[position], size)
            images.append(img[:, :, ::-1].transpose(2, 0, 1))
            targets.append(build_targets(boxes, labels, size, self.spec.anchor_scales, self.spec.anchor_mask,
                                         self.spec.num_classes, self.cfg.max_box,
                                         self.cfg.label_smooth_factor if self.cfg.label_smooth else 0.0))
        batch = [np.stack(images).astype(np.float32) * np.float32(1 / 255.0)]
        batch += [np.stack([t[i] for t in targets]) for i in range(len(targets[0]))]
        return tuple(batch)


class RunSource:
    """The batches of a whole run from global step `start` to `end`, epoch after epoch.

    One loader for the run, not one per epoch: starting the loader's worker
    processes cost a few seconds of CPU per epoch, taken from the training on
    a 2-core machine."""

    def __init__(self, data: CocoTrainSet, sampler: DistributedSampler, config, spec: ModelSpec, start: int,
                 end: int):
        self.data = data
        self.sampler = sampler
        self.cfg = config
        self.spec = spec
        self.start = start
        self.end = end
        self.steps_per_epoch = len(sampler) // config.per_batch_size
        self.epoch_source: Optional[BatchSource] = None

    def __len__(self) -> int:
        return max(0, self.end - self.start)

    def __getitem__(self, k: int) -> Tuple[np.ndarray, ...]:
        epoch, b = divmod(self.start + k, self.steps_per_epoch)
        if self.epoch_source is None or self.epoch_source.epoch != epoch:
            self.epoch_source = BatchSource(self.data, self.sampler.indices(epoch), self.cfg, self.spec, epoch)
        return self.epoch_source[b]


def create_train_dataset(source: "BatchSource | RunSource", workers: int):
    """A GeneratorDataset over whole batches, built in `workers` processes."""
    import mindspore.dataset as ds
    columns = ["images"] + [f"target{i}" for i in range(len(source.spec.anchor_mask))] + ["gt_boxes"]
    return ds.GeneratorDataset(source, column_names=columns, shuffle=False,
                               num_parallel_workers=max(1, workers), python_multiprocessing=workers > 1)
