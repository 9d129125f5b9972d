"""benchmark.py runs every measurement and writes the keys the README table is built from."""
import importlib.util
import json
import os
import shlex

from src.cpu.precision import has_bf16, kernels_isa

KEYS = {"ms_infer_b1_ms", "ort_infer_b1_ms", "ms_infer_b8_ips", "ort_infer_b8_ips", "train_ips", "data_ips",
        "eval_ips", "peak_rss_mb", "params_m", "gflops", "matmul_gflops", "train_peak_fraction"}


def test_benchmark_writes_all_keys(readme_runs, user_checkout):
    """The README's own command (yolov3-tiny at 416, random weights, its own data set on a clone without
    ../shared), as tests/test_readme.py runs it."""
    command, run = next((c, r) for c, r in readme_runs.items() if c.startswith("python benchmark.py"))
    assert run.proc.returncode == 0, run.proc.stderr[-3000:]
    result = json.loads(open(os.path.join(user_checkout, shlex.split(command)[-1])).read())
    stdout = run.proc.stdout
    assert result["model"] == "yolov3_tiny" and result["shape"] == 416
    assert KEYS <= set(result) and all(result[k] > 0 for k in KEYS)
    assert abs(result["gflops"] - 5.56) < 0.01  # darknet's own count for yolov3-tiny at 416
    assert 0 < result["train_peak_fraction"] <= 1  # a training step cannot outrun the machine's matmul peak
    assert (f"({result['train_peak_fraction']:.0%} of the {result['matmul_gflops']:.0f} GFLOP/s matmul peak;"
            in stdout)
    assert result["matmul_gflops"] == max(result["numpy_matmul_gflops"], result["sgemm_gflops"])
    assert "ONNX Runtime" in stdout
    # the precision that ran, every precision's matmul peak, and bf16 beside fp32 where the CPU has it
    assert result["precision"] == "fp32" and result["bf16_gemm_gflops"] > 0 and result["int8_gemm_gops"] > 0
    bf16_keys = {"bf16_ms_infer_b1_ms", "bf16_ms_infer_b8_ips", "bf16_train_ips"}
    assert (bf16_keys <= set(result)) == has_bf16(kernels_isa())
    # every convolution of the forwards and the training step ran on the CPU kernels, none on MindSpore's oneDNN
    assert result["onednn_isa"] == "AVX2" and result["conv_primitives"] == 0 and result["ref_conv_primitives"] == 0
    assert (f"MindSpore's oneDNN: AVX2, {result['conv_primitives']:.0f} convolution primitives run, 0 through a "
            f"reference implementation; kernels' sgemm: {result['sgemm_isa']}") in stdout
    # bench_deployment: the int8 export in ONNX Runtime, and OpenVINO's engines where it is installed
    deployment = {"ort_int8_b1_ms", "ort_int8_b8_ips", "ort_int8_speedup_b1", "ort_int8_speedup_b8"}
    if importlib.util.find_spec("openvino"):
        deployment |= {"ov_fp32_b1_ms", "ov_fp32_b8_ips", "ov_int8_b1_ms", "ov_int8_b8_ips"}
    assert deployment <= set(result) and all(result[k] > 0 for k in deployment)
    assert "ONNX Runtime int8 over fp32, same run, turns taken:" in stdout


def test_deployment_of_an_uncalibratable_graph_is_skipped_with_the_reason(tmp_path, capsys):
    """yolov3 with random weights overflows in its decode: its int8 copy cannot be calibrated, and the benchmark
    says so in one line instead of stopping."""
    import benchmark
    from conftest import SAMPLES
    from test_onnx_deploy import overflowing_graph
    path = overflowing_graph(str(tmp_path / "overflow.onnx"))
    result = benchmark.bench_deployment({1: path}, SAMPLES, 32, False, 1)
    assert list(result) == ["int8_skipped"] and "not finite (untrained or diverged weights?)" in result["int8_skipped"]
    capsys.readouterr()  # the quantiser's own prints
    benchmark.print_deployment(result)
    assert capsys.readouterr().out.startswith("exported graph's int8 and OpenVINO figures: not measured (cannot "
                                              "calibrate")
