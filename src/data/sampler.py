"""DistributedSampler: each replica's share of the data set for one epoch."""
from typing import List

import numpy as np


class DistributedSampler:
    """Shuffled (seed + epoch) indices split over `num_replicas`; padded by wrapping so every rank
    gets the same count. One replica is plain single-device shuffling."""

    def __init__(self, dataset_size: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0):
        if dataset_size < 1:
            raise ValueError("empty data set")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside 0..{num_replicas - 1}")
        self.dataset_size = dataset_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.num_samples = -(-dataset_size // num_replicas)

    def indices(self, epoch: int) -> List[int]:
        if self.shuffle:
            order = np.random.default_rng((self.seed, epoch)).permutation(self.dataset_size)
        else:
            order = np.arange(self.dataset_size)
        total = self.num_samples * self.num_replicas
        order = np.resize(order, total)  # wraps around to pad
        return order[self.rank:total:self.num_replicas].tolist()

    def __len__(self) -> int:
        return self.num_samples
