"""Device and graph-mode setup, selected by config.device_target."""
from typing import Dict

import numpy as np
import mindspore as ms

from src.errors import UserError


def setup_device(config) -> None:
    """GRAPH_MODE on the configured device; on CPU the O0 jit level, which runs fastest there."""
    try:
        if config.device_target == "CPU":
            ms.set_context(mode=ms.GRAPH_MODE, jit_config={"jit_level": "O0"})
            ms.set_device("CPU")
        else:
            ms.set_context(mode=ms.GRAPH_MODE)
            ms.set_device(config.device_target, config.device_id)
    except (RuntimeError, ValueError) as e:
        raise UserError(f"device_target {config.device_target} is not usable here: {str(e).splitlines()[0]}") from None


def init_distributed(config) -> Dict[str, int]:
    """Data-parallel setup over mindspore.communication; returns the rank and group size the runtime gives, as
    config values (`config.with_values(**init_distributed(config))`)."""
    from mindspore.communication import get_group_size, get_rank, init
    try:
        init()
    except RuntimeError as e:
        raise UserError(f"is_distributed=1 but the collective runtime did not start (launch with msrun or "
                        f"the scripts/ launchers): {str(e).splitlines()[0]}") from None
    ranks = {"rank": get_rank(), "group_size": get_group_size()}
    for key, value in ranks.items():
        if config.is_set(key) and getattr(config, key) != value:
            raise UserError(f"{key} {getattr(config, key)} ({config.source(key)}) is not the runtime's {value}: the "
                            f"launcher gives each process its rank and the group size; leave {key} out")
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                 device_num=ranks["group_size"])
    return ranks


class _Collective(ms.nn.Cell):
    """One collective op as a cell (collective ops run inside a graph)."""

    def __init__(self, op):
        super().__init__()
        self.op = op

    def construct(self, x):
        return self.op(x)


def all_reduce_sum(values: np.ndarray) -> np.ndarray:
    """Element-wise sum over all ranks; also a barrier (CPU has no Barrier kernel, AllReduce it has)."""
    return _Collective(ms.ops.AllReduce())(ms.Tensor(np.asarray(values, np.float32))).asnumpy()


def all_gather_rows(rows: np.ndarray) -> np.ndarray:
    """The (n_r, k) int32 rows of every rank r, concatenated in rank order, on every rank: through the
    collective layer, so ranks on other nodes need no shared folder. Ranks may hold different numbers of rows."""
    rows = np.asarray(rows, np.int32)
    gather = _Collective(ms.ops.AllGather())
    counts = gather(ms.Tensor(np.array([len(rows)], np.int32))).asnumpy()
    padded = np.zeros((max(int(counts.max()), 1), rows.shape[1]), np.int32)
    padded[:len(rows)] = rows
    gathered = gather(ms.Tensor(padded)).asnumpy().reshape(len(counts), len(padded), -1)
    return np.concatenate([gathered[r, :n] for r, n in enumerate(counts)])
