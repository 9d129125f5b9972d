"""Convert a darknet .weights file into a MindSpore checkpoint of the configured model, with its model card
(the config's classes, COCO's 80 by default, and anchors; darknet's models see raw pixels: input_centering off).

A file that covers only the first layers (e.g. darknet53.conv.74, the
DarkNet-53 backbone) converts the layers it covers; the checkpoint then holds
only those layers' parameters, for --pretrained_backbone.
"""
from model_utils.config import load_config
from src.errors import UserError, run_cli
from src.formats.checkpoint import network_parameters, save_checkpoint, state_checksum
from src.formats.darknet_weights import load_darknet_weights
from src.formats.model_card import checkpoint_entry, open_weights, resolve
from src.logger import get_logger
from src.models.yolo import build_network


def main() -> None:
    config = load_config(description=__doc__)
    if not config.input_file or not config.output_file:
        raise UserError("usage: convert_weight.py --config_path C --input_file X.weights --output_file Y.ckpt")
    stored, darknet = open_weights(config.input_file, darknet=True)
    card = resolve(config, stored, get_logger())
    network = build_network(card.spec)
    layers = network.darknet_layers()
    count = load_darknet_weights(network, darknet, card.spec.model_name)
    covered = set()
    for conv, bn in layers[:count]:
        covered.update(id(p) for p in conv.get_parameters())
        if bn is not None:
            covered.update(id(p) for p in bn.get_parameters())
    params = {n: p for n, p in network_parameters(network).items() if id(p) in covered}
    save_checkpoint(params, config.output_file, checkpoint_entry(card.with_checksum(state_checksum(params))))
    get_logger().info("converted %d of %d conv layers (%d parameters) of %s from %s to %s", count, len(layers),
                      len(params), card.spec.model_name, config.input_file, config.output_file)


if __name__ == "__main__":
    run_cli(main)
