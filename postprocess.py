"""C++ inference results (ascend310_infer's result_Files/) -> COCO results, stats and acc.log.

Each result file is RESULT_FILES/IMAGE_FILE_NAME.txt with one "label score x y w h" line per
detection (image pixels). Detections become COCO results exactly as eval.py makes them (each label
to the annotation file's category as eval.py maps it: by the model's category names, else ids, from
the model card: the one the app copied into RESULT_FILES/model_card.json from the exported model, or
--pretrained's (a .ckpt, .onnx or .mindir); without either, the config's: COCO's 80 by default; bbox
rounded to 3 decimals, score to 5), are scored as eval.py scores (faster-coco-eval), and
OUTPUT_DIR receives predictions.json, stats.json (the keys of eval.py's) and acc.log (the
COCO summary). Images of the annotation file without a result file (skipped by the app as
unreadable, or missing) count as skipped, with no detections, as in eval.py. A line with an
infinity or NaN (which the app never writes) is left out and counted, so that predictions.json
stays strict JSON.

    python postprocess.py --result_files ./result_Files --ann_file instances_val2017.json --output_dir . \
        [--pretrained the_exported.ckpt] [--config_path configs/x.yaml]
"""
import argparse
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from model_utils.config import load_config
from src.data.coco import coco_result, evaluate, label_to_category, load_coco
from src.errors import UserError, run_cli
from src.fileio import write_json, write_text
from src.formats.model_card import CARD_KEY, StoredCard, decode, open_weights, read_bytes, resolve
from src.logger import get_logger
from src.models.spec import ModelSpec

RESULT_SUFFIX = ".txt"
APP_CARD = CARD_KEY + ".json"  # the card the C++ app read from the model, in its result folder


def read_result_file(path: str) -> List[Tuple[int, np.float32, np.ndarray]]:
    """(label, score, box x y w h) per line; floats parsed as float32, the app's precision."""
    detections = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            try:
                if len(fields) != 6:
                    raise ValueError
                label = int(fields[0])
                values = np.array(fields[1:], np.float32)
            except ValueError:
                raise UserError(f"{path}:{number}: expected 'label score x y w h', got {line.strip()!r}") from None
            detections.append((label, values[0], values[1:]))
    return detections


def list_result_files(result_dir: str) -> Dict[str, str]:
    """Image file name -> its result file."""
    if not os.path.isdir(result_dir):
        raise UserError(f"result folder not found: {result_dir}")
    names = [n for n in os.listdir(result_dir) if n.endswith(RESULT_SUFFIX) and not n.startswith(".")]
    if not names:
        raise UserError(f"no result files (*{RESULT_SUFFIX}) in {result_dir}; run the C++ app first")
    return {n[:-len(RESULT_SUFFIX)]: os.path.join(result_dir, n) for n in names}


def coco_results(coco, files: Dict[str, str], categories: Dict[int, int]) -> Tuple[List[dict], int, int]:
    """COCO results in eval.py's order (image id, then the app's score order), labels mapped by `categories`
    (labels of categories the file lacks are left out, as eval.py does); how many images of the annotation file
    have no result file; how many lines were left out as not finite."""
    results: List[dict] = []
    missing = 0
    nonfinite = 0
    for image_id in sorted(coco.getImgIds()):
        path = files.get(os.path.basename(coco.imgs[image_id]["file_name"]))
        if path is None:
            missing += 1
            continue
        for label, score, box in read_result_file(path):
            if not (np.isfinite(score) and np.isfinite(box).all()):
                nonfinite += 1
            elif label in categories:
                results.append(coco_result(image_id, categories[label], box, score))
    return results, missing, nonfinite


def run(result_dir: str, ann_file: str, output_dir: str, spec: ModelSpec) -> dict:
    coco = load_coco(ann_file)
    categories = label_to_category(coco, ann_file, *spec.categories())
    files = list_result_files(result_dir)
    known = {os.path.basename(im["file_name"]) for im in coco.imgs.values()}
    unmatched = sorted(set(files) - known)
    results, missing, nonfinite = coco_results(coco, files, categories)
    os.makedirs(output_dir, exist_ok=True)
    write_json(os.path.join(output_dir, "predictions.json"), results)  # before loadRes adds its fields
    stats, summary, _ = evaluate(coco, results)
    stats.update(images=len(coco.imgs) - missing, skipped_images=missing)
    counts = (f"images: {stats['images']}, without a result file (skipped or missing): {missing}, "
              f"result files not in the annotation file: {len(unmatched)}")
    write_json(os.path.join(output_dir, "stats.json"), stats)
    write_text(os.path.join(output_dir, "acc.log"), f"{summary}\n{counts}\n")
    logger = get_logger()
    if nonfinite:
        logger.warning("result lines with an infinity or NaN left out: %d", nonfinite)
    logger.info("\n=============coco eval result=========\n%s", summary)
    logger.info("%s; results in %s", counts, output_dir)
    return stats


def main() -> None:
    own = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    own.add_argument("--result_files", default="./result_Files")
    own.add_argument("--output_dir", default=".")
    try:
        args, rest = own.parse_known_args()
    except argparse.ArgumentError as e:
        raise UserError(str(e)) from None
    config = load_config(rest, description=__doc__ + (
        "\nOwn options: --result_files (the C++ app's result folder, default ./result_Files), --output_dir (where "
        "predictions.json, stats.json and acc.log go, default .). Config keys below: --ann_file (required), "
        "--pretrained (the exported model or its weights, for their card), --config_path, --coco_ids, --labels, "
        "--num_classes."))
    if not config.ann_file:
        raise UserError("give --ann_file, the COCO annotation file of the images")
    card = resolve(config, model_card(config.pretrained, args.result_files), get_logger())
    run(args.result_files, config.ann_file, args.output_dir, card.spec)


def model_card(pretrained: str, result_dir: str) -> Optional[StoredCard]:
    """The card of --pretrained if given, else the one the C++ app left in its result folder, else none."""
    if pretrained:
        return open_weights(pretrained)[0]
    app_card = os.path.join(result_dir, APP_CARD)
    return decode(read_bytes(app_card, "model card").decode("utf-8"), app_card) if os.path.isfile(app_card) \
        else None


if __name__ == "__main__":
    run_cli(main)
