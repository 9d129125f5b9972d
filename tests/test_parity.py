"""Raw parity with darknet (OpenCV's importer) through convert_weight.py + export.py, ONNX and MINDIR:
yolov3-tiny with darknet's COCO weights, yolov3 and yolov3-spp with random darknet weights made here."""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, darknet_cfg, opencv_reference, run_script

MODELS = {
    "yolov3-tiny": os.path.join(REPO, "configs", "yolov3_tiny.yaml"),
    "yolov3": os.path.join(REPO, "default_config.yaml"),
    "yolov3-spp": os.path.join(REPO, "configs", "yolov3_spp.yaml"),
}


def darknet_sections(cfg: str) -> list:
    """[(section name, {key: value})] of a darknet cfg, in file order."""
    sections = []
    with open(cfg) as f:
        for raw in f:
            line = raw.split("#", 1)[0].strip()
            if line.startswith("["):
                sections.append((line.strip("[]"), {}))
            elif "=" in line:
                key, value = line.split("=", 1)
                sections[-1][1][key.strip()] = value.strip()
    return sections


def random_darknet_weights(cfg: str, path: str, seed: int) -> None:
    """Random darknet .weights for any cfg: the header (version 0.2.0, 64-bit seen), then per convolution
    in cfg order BN beta, gamma, mean, variance (or the bias) and the weights. He-scaled weights, and the
    gamma of the convolution ending each residual branch shrunk, keep DarkNet-53's 23 shortcuts from
    blowing the activations up: the outputs stay finite and vary (checked in the test)."""
    rng = np.random.default_rng(seed)
    sections = darknet_sections(cfg)
    channels = []  # output channels of each layer after [net]
    prev = int(sections[0][1].get("channels", 3))
    parts = [np.array([0, 2, 0], np.int32).tobytes(), np.zeros(1, np.int64).tobytes()]
    for i, (kind, opts) in enumerate(sections[1:], start=1):
        if kind == "convolutional":
            filters, size = int(opts["filters"]), int(opts["size"])
            fan_in = prev * size * size
            if int(opts.get("batch_normalize", 0)):
                ends_branch = i + 1 < len(sections) and sections[i + 1][0] == "shortcut"
                gamma = rng.uniform(0.5, 1.0, filters) * (0.3 if ends_branch else 1.0)
                head = [rng.normal(0, 0.1, filters), gamma, rng.normal(0, 0.1, filters), rng.uniform(0.5, 1.5, filters)]
            else:
                head = [rng.normal(0, 0.1, filters)]
            weights = rng.normal(0, np.sqrt(2.0 / fan_in), filters * fan_in)
            parts += [a.astype(np.float32).tobytes() for a in head + [weights]]
            prev = filters
        elif kind == "route":
            prev = sum(channels[int(j)] for j in opts["layers"].split(","))
        channels.append(prev)
    with open(path, "wb") as f:
        f.write(b"".join(parts))


@pytest.fixture(scope="module", params=list(MODELS))
def exported(request, tiny_weights_file, tmp_path_factory):
    """(cfg name, darknet weights, converted ckpt, exported ONNX path, config path)."""
    name = request.param
    tmp = tmp_path_factory.mktemp(name)
    weights = tiny_weights_file
    if name != "yolov3-tiny":
        weights = str(tmp / f"{name}.weights")
        random_darknet_weights(darknet_cfg(name), weights, seed=3)
    ckpt = str(tmp / f"{name}.ckpt")
    run_script("convert_weight.py", "--config_path", MODELS[name], "--input_file", weights, "--output_file", ckpt)
    run_script("export.py", "--config_path", MODELS[name], "--ckpt_file", ckpt, "--file_name", str(tmp / name),
               "--file_format", "ONNX")
    return name, weights, ckpt, str(tmp / f"{name}.onnx"), MODELS[name]


def run_onnx(path: str, blob: np.ndarray) -> np.ndarray:
    import onnxruntime as ort
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: blob})[0]


def test_onnx_matches_darknet_reference(exported, ref_python, sample_blob, tmp_path):
    name, weights, _, onnx_path, _ = exported
    blob = np.load(sample_blob)
    ours = run_onnx(onnx_path, blob)[0]
    out = str(tmp_path / "ref.npz")
    opencv_reference(ref_python, "raw", "--cfg", darknet_cfg(name), "--weights", weights, "--blob", sample_blob,
                     "--out", out)
    ref = np.load(out)
    theirs = np.concatenate([ref[f"arr_{i}"] for i in range(len(ref.files))])
    assert ours.shape == theirs.shape
    scaled = ours.copy()
    scaled[:, :4] /= blob.shape[2]
    scaled[:, 5:] *= scaled[:, 4:5]
    diff = np.abs(scaled - theirs).max()
    assert diff <= 1e-4, f"{name}: max |diff| {diff}"
    assert np.isfinite(theirs).all() and theirs[:, 4].std() > 1e-3 and theirs[:, 5:].std() > 1e-3, \
        "reference outputs are constant or not finite: the check would prove nothing"


def test_mindir_loads_back_and_matches_onnx(exported, sample_blob, tmp_path):
    name, _, ckpt, onnx_path, cfg = exported
    if name == "yolov3-spp":
        pytest.skip("MINDIR round trip covered by yolov3-tiny and yolov3")
    code = f"""
import sys, numpy as np, mindspore as ms
sys.path.insert(0, {REPO!r})
ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU", jit_config={{"jit_level": "O0"}})
net = ms.nn.GraphCell(ms.load({str(tmp_path / name) + '.mindir'!r}))
np.save({str(tmp_path / 'mindir.npy')!r}, net(ms.Tensor(np.load({sample_blob!r}))).asnumpy())
"""
    run_script("export.py", "--config_path", cfg, "--ckpt_file", ckpt, "--file_name", str(tmp_path / name),
               "--file_format", "MINDIR")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=600)
    mindir = np.load(tmp_path / "mindir.npy")
    onnx = run_onnx(onnx_path, np.load(sample_blob))
    # compare as the reference sees it (box columns relative to the input size)
    mindir[..., :4] /= 416
    onnx[..., :4] /= 416
    assert np.abs(mindir - onnx).max() <= 1e-4
