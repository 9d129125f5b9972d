"""Bad input: one clear line on stderr, a non-zero exit, no traceback; partial weights convert."""
import os
import sys

import numpy as np

from conftest import COCO_TINY, DARKNET, REPO, TINY_CFG, run_script
from src.models.spec import ModelSpec


def assert_clean_error(proc, *fragments):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    for frag in fragments:
        assert frag in lines[0], lines[0]


def test_missing_data_dir(tmp_path):
    proc = run_script("eval.py", "--data_dir", str(tmp_path / "nope"), "--pretrained", "x.ckpt", check=False)
    assert_clean_error(proc, "data_dir not found")


def test_unknown_option():
    for script in ("eval.py", "export.py", "predict.py", "convert_weight.py"):
        assert_clean_error(run_script(script, "--bogus_option", "1", check=False), "unknown option --bogus_option")


def test_wrong_value_type():
    assert_clean_error(run_script("eval.py", "--testing_shape", "abc", check=False), "testing_shape expects int")


def test_truncated_weights(shared, tmp_path):
    data = open(os.path.join(DARKNET, "yolov3-tiny.weights"), "rb").read()
    bad = tmp_path / "cut.weights"
    bad.write_bytes(data[:1000003 * 4])
    proc = run_script("convert_weight.py", "--config_path", TINY_CFG, "--input_file", str(bad),
                      "--output_file", str(tmp_path / "x.ckpt"), check=False)
    assert_clean_error(proc, "expected 35434956 bytes", f"got {1000003 * 4} bytes")
    assert not (tmp_path / "x.ckpt").exists()


def test_backbone_prefix_converts_covered_layers(shared, tmp_path):
    """A file ending at a layer boundary (like darknet53.conv.74) converts just those layers."""
    sys.path.insert(0, REPO)
    from model_utils.config import load_config
    from src.models.yolo import build_network
    net = build_network(ModelSpec.from_config(load_config(["--config_path", TINY_CFG])))
    floats = sum(int(np.prod(c.weight.shape)) + 4 * c.weight.shape[0] for c, _ in net.darknet_layers()[:7])
    data = open(os.path.join(DARKNET, "yolov3-tiny.weights"), "rb").read()
    prefix = tmp_path / "tiny.conv.15"
    prefix.write_bytes(data[:20 + 4 * floats])
    out = tmp_path / "backbone.ckpt"
    proc = run_script("convert_weight.py", "--config_path", TINY_CFG, "--input_file", str(prefix),
                      "--output_file", str(out))
    assert "converted 7 of 13 conv layers (35 parameters)" in proc.stdout
    import mindspore as ms
    ckpt = ms.load_checkpoint(str(out))
    params = [k for k, v in ckpt.items() if isinstance(v, ms.Parameter)]
    assert len(params) == 35 and all(k.startswith("backbone.") for k in params)
    want = np.frombuffer(data[20:20 + 4 * 64], np.float32)[48:64]  # conv0: 16 x (beta, gamma, mean, var)
    np.testing.assert_array_equal(ckpt["backbone.convs.0.bn.moving_variance"].asnumpy(), want)


def test_checkpoint_of_another_model(tiny_ckpt, tmp_path):
    """A checkpoint without a card (older) is taken for the config's model: another one's does not fit. The
    command line wins over a card: an architecture its anchors do not fit is one error."""
    import mindspore as ms
    from src.formats.checkpoint import save_checkpoint
    bare = str(tmp_path / "no_card.ckpt")
    save_checkpoint({k: v for k, v in ms.load_checkpoint(tiny_ckpt).items() if isinstance(v, ms.Parameter)}, bare)
    proc = run_script("eval.py", "--data_dir", COCO_TINY, "--pretrained", bare, check=False)
    assert_clean_error(proc, "does not fit yolov3_darknet53")
    assert f"WARNING:{bare} has no model card: assumed architecture yolov3_darknet53" in proc.stdout
    proc = run_script("export.py", "--ckpt_file", tiny_ckpt, "--model_name", "yolov3_darknet53_spp", check=False)
    assert_clean_error(proc, "yolov3_darknet53_spp has 3 output scales but anchor_mask has 2 entries")


def test_corrupt_checkpoint_and_missing_input(tmp_path, tiny_ckpt):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(open(tiny_ckpt, "rb").read()[:1000])
    proc = run_script("predict.py", "--config_path", TINY_CFG, "--input", os.path.join(COCO_TINY, "val2017"),
                      "--pretrained", str(bad), "--output_dir", str(tmp_path / "out"), check=False)
    assert_clean_error(proc, "cannot read checkpoint")
    proc = run_script("predict.py", "--config_path", TINY_CFG, "--input", str(tmp_path / "none.jpg"),
                      "--pretrained", tiny_ckpt, check=False)
    assert_clean_error(proc, "input not found")


def test_air_without_ascend(tiny_ckpt, tmp_path):
    proc = run_script("export.py", "--config_path", TINY_CFG, "--ckpt_file", tiny_ckpt, "--file_format", "AIR",
                      "--file_name", str(tmp_path / "m"), check=False)
    assert_clean_error(proc, "AIR export needs an Ascend device")
    assert not os.listdir(tmp_path)
