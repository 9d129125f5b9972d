"""No convolution on oneDNN's reference kernels, whatever the CPU: MindSpore's oneDNN is capped at AVX2 (it runs
reference convolutions on AVX-512), the CPU kernels' own copy keeps every instruction set the CPU has."""
import json
import os
import subprocess
import sys

import mindspore as ms
import pytest

from conftest import REPO, TINY_CFG
from src.models.spec import ModelSpec
from src.cpu import onednn
from src.formats.checkpoint import network_parameters, save_checkpoint

SAMPLE = os.path.join(REPO, "samples", sorted(os.listdir(os.path.join(REPO, "samples")))[0])


def clean_env(**extra: str) -> dict:
    """The environment without any oneDNN setting of the user's, with oneDNN's verbose output on."""
    env = {k: v for k, v in os.environ.items() if k not in onednn.USER_SETTINGS and k != "ONEDNN_VERBOSE"}
    return {**env, "ONEDNN_VERBOSE": "1", **extra}


def run_verbose(*argv: str) -> str:
    proc = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True, timeout=900,
                          env=clean_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "onednn_verbose" in proc.stdout  # the verbose output was on and read
    return proc.stdout


def random_checkpoint(config_argv, path: str) -> str:
    from model_utils.config import load_config
    from src.models.yolo import build_network
    save_checkpoint(network_parameters(build_network(ModelSpec.from_config(load_config(config_argv)))), path)
    return path


@pytest.mark.parametrize("config", [TINY_CFG, None], ids=["yolov3_tiny", "yolov3"])
def test_inference_runs_no_reference_convolution(config, tmp_path):
    argv = ["--config_path", config] if config else []
    ckpt = random_checkpoint(argv, str(tmp_path / "random.ckpt"))
    out = run_verbose("predict.py", *argv, "--pretrained", ckpt, "--input", SAMPLE, "--output_dir",
                      str(tmp_path / "pred"), "--score_threshold", "0.5")
    assert onednn.reference_kernels(onednn.convolution_implementations(out)) == []
    assert os.path.exists(tmp_path / "pred" / "detections.json")


@pytest.mark.parametrize("config", [TINY_CFG, os.path.join(REPO, "configs", "yolov3_mobilenetv2.yaml")],
                         ids=["yolov3_tiny", "yolov3_mobilenetv2"])
def test_training_runs_no_reference_convolution(config, tmp_path):
    from src.data.synthetic import make_dataset
    make_dataset(str(tmp_path / "data"), 4, 2, size=128, min_size=24, max_size=50)
    out = run_verbose("train.py", "--config_path", config, "--data_dir", str(tmp_path / "data"),
                      "--training_shape", "128", "--per_batch_size", "2", "--max_epoch", "1",
                      "--ckpt_path", str(tmp_path / "run"))
    # stronger than no reference kernel: every convolution of the training step runs on the CPU kernels
    assert onednn.convolution_implementations(out) == []


def test_bf16_training_runs_onednn_convolutions_and_no_reference_one(tmp_path):
    """In bf16 the kernels run some passes on their own oneDNN's convolution primitives (kernels/dnnl_conv.cc);
    none of them, nor any other convolution, is a reference implementation."""
    from src.cpu import precision
    from src.data.synthetic import make_dataset
    if not precision.has_bf16(precision.kernels_isa()):
        pytest.skip("this CPU (or the kernels' oneDNN) has no bf16 arithmetic (AVX512-BF16 or AMX-BF16)")
    make_dataset(str(tmp_path / "data"), 4, 2, size=128, min_size=24, max_size=50)
    out = run_verbose("train.py", "--config_path", TINY_CFG, "--data_dir", str(tmp_path / "data"),
                      "--training_shape", "128", "--per_batch_size", "2", "--max_epoch", "1", "--precision", "bf16",
                      "--ckpt_path", str(tmp_path / "run"))
    implementations = onednn.convolution_implementations(out)
    # bf16 kernels: AVX512-BF16 ones name it, AMX ones their ISA (e.g. brg_conv_fwd:avx10_1_512_amx)
    assert implementations and all("bf16" in name or "amx" in name for name in implementations), set(implementations)
    assert onednn.reference_kernels(implementations) == []


def isa_in_subprocess(**env: str) -> str:
    code = ("from src.cpu.process import set_up_process; set_up_process(); from src.cpu import onednn; "
            "print(onednn.mindspore_isa())")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**clean_env(), "ONEDNN_VERBOSE": "0", **env})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


def test_mindspore_is_capped_at_avx2_unless_the_user_says_otherwise():
    assert isa_in_subprocess() == "AVX2"
    assert isa_in_subprocess(ONEDNN_MAX_CPU_ISA="SSE41") == "SSE4.1"


def test_the_kernels_sgemm_keeps_the_cpus_instruction_set():
    from src.cpu import cpu_kernels
    ms.set_context(device_target="CPU")
    with open("/proc/cpuinfo") as f:
        avx512 = "avx512f" in f.read().split()
    isa = cpu_kernels.sgemm_isa()
    assert isa.startswith(("AVX512", "AVX10")) if avx512 else isa.startswith("AVX2"), isa


def test_a_cpu_without_bf16_convolutions_keeps_the_hand_written_forms():
    """Capped at AVX2 (as on an AVX2-only CPU) the kernels' oneDNN has no bf16 convolution: forced into bf16, every
    pass stays on the hand-written forms instead of failing."""
    code = ("from src.cpu.process import set_up_process; set_up_process(); import mindspore as ms; "
            "ms.set_context(device_target='CPU'); from src.cpu import cpu_kernels, precision; "
            "precision.set_precision('bf16'); print(cpu_kernels.sgemm_isa(), "
            "cpu_kernels.conv_route((2, 16, 20, 20), (32, 16, 3, 3), 1))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**clean_env(), "ONEDNN_VERBOSE": "0", "ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "AVX2 [None, None, None]"


def bf16_routes(**env: str) -> list:
    """In bf16, conv_route of a wide 3x3 layer (Winograd's shape without AMX), a narrow one and the RGB layer, with
    the kernels' oneDNN ISA: [isa, wide, narrow, rgb] from a fresh process with `env`."""
    code = ("from src.cpu.process import set_up_process; set_up_process(); import json, mindspore as ms; "
            "ms.set_context(device_target='CPU'); from src.cpu import cpu_kernels, precision; "
            "precision.set_precision('bf16'); r = cpu_kernels.conv_route; "
            "print(json.dumps([precision.kernels_isa(), r((8, 128, 26, 26), (256, 128, 3, 3), 1), "
            "r((8, 16, 52, 52), (32, 16, 3, 3), 1), r((8, 3, 64, 64), (16, 3, 3, 3), 1)]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**clean_env(), "ONEDNN_VERBOSE": "0", **env})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_on_amx_onednn_runs_every_bf16_pass_but_the_rgb_layers_forward():
    from src.cpu import precision
    if not precision.has_amx(precision.kernels_isa()):
        pytest.skip("this CPU (or the kernels' oneDNN) has no AMX")
    isa, wide, narrow, rgb = bf16_routes()
    assert precision.has_amx(isa)
    for name in wide + narrow + rgb[1:]:
        assert name is not None and "amx" in name, (wide, narrow, rgb)
    assert rgb[0] is None  # the direct form, in fp32 on the image's pixels


def test_without_amx_bf16_passes_are_chosen_by_layer_shape():
    """Capped at AVX512-BF16 (an AMD EPYC's oneDNN, on any CPU with bf16 dot products): the wide 3x3 layer stays on
    the hand-written forms (Winograd), the narrow one's forward runs oneDNN's AVX512-BF16 primitive."""
    from src.cpu import precision
    if not precision.has_bf16(precision.kernels_isa()):
        pytest.skip("this CPU (or the kernels' oneDNN) has no bf16 arithmetic (AVX512-BF16 or AMX-BF16)")
    isa, wide, narrow, rgb = bf16_routes(ONEDNN_MAX_CPU_ISA="AVX512_CORE_BF16")
    assert precision.has_bf16(isa) and not precision.has_amx(isa), hex(isa)
    assert wide == [None, None, None]
    assert narrow[0] is not None and "avx512_core_bf16" in narrow[0], narrow
    assert rgb[0] is None


def test_verbose_lines_are_parsed():
    text = "\n".join([
        "onednn_verbose,v1,info,cpu,isa:Intel AVX2",
        "onednn_verbose,v1,primitive,exec,cpu,convolution,jit_uni_ncsp:conv+ref:any,forward_training,src:f32",
        "onednn_verbose,v1,primitive,exec,cpu,convolution,x64:gemm:jit,backward_data,src:f32",
        "onednn_verbose,v1,primitive,exec,cpu,eltwise,ref:any,forward_training,src:f32",
        "onednn_verbose,primitive,exec,cpu,convolution,brgconv:avx2,forward_inference,src:f32",
        "some other line,exec,cpu,convolution,ref",
    ])
    convs = onednn.convolution_implementations(text)
    assert convs == ["jit_uni_ncsp:conv+ref:any", "x64:gemm:jit", "brgconv:avx2"]
    assert onednn.reference_kernels(convs) == ["jit_uni_ncsp:conv+ref:any"]


def test_verbose_record_collects_the_convolutions_mindspore_runs():
    from mindspore import Tensor, nn
    import numpy as np
    from src.cpu.process import set_up_process
    set_up_process()  # the cap, as every entry point sets it
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU", jit_config={"jit_level": "O0"})
    conv = nn.Conv2d(4, 8, 3, 2, pad_mode="pad", padding=1)
    x = Tensor(np.ones((1, 4, 16, 16), np.float32))
    with onednn.verbose_record() as lines:
        y = conv(x).asnumpy()
    assert y.shape == (1, 8, 8, 8)
    convs = onednn.convolution_implementations("\n".join(lines))
    assert len(convs) == 1 and onednn.reference_kernels(convs) == []
    with onednn.verbose_record() as later:
        pass
    assert later == []
