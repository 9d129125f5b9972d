"""Device and graph-mode setup, selected by config.device_target."""
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
