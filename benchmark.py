"""Speed of a YOLOv3 model on this machine, all measured in one run (medians after warm-up).

  MindSpore GRAPH_MODE forward, batch 1 (ms) and batch 8 (images/s), in --precision and, on a CPU with bf16
    arithmetic, in the other precision too (keys prefixed with its name)
  the same model exported to ONNX, in ONNX Runtime with 2 threads, batch 1 and 8
  its int8 copy (export.py --quantize int8) in ONNX Runtime, and with OpenVINO installed fp32, bf16 and that int8
    graph in OpenVINO, the engines taking turns (bench_deployment)
  a training step (images/s; batch 8, the real loss, optimiser and loss scale, synthetic tensors), and its
    FLOP rate (3 x forward GFLOPs per image) as a fraction of this machine's float32 matmul rate (the faster of
    numpy's BLAS and the CPU kernels' sgemm, on all cores)
  the training data pipeline alone, with training augmentation (images/s)
  eval.py end to end (images/s over its whole wall time, start-up and compile included)
  the matmul peak of each precision (fp32, bf16, u8s8s32 int8) through the kernels' oneDNN
  the instruction sets of MindSpore's oneDNN and of the kernels' sgemm, and how many convolution primitives
    MindSpore's oneDNN ran (in one untimed run of each forward and of the training step) and how many of them
    through a reference implementation

    python benchmark.py --config_path configs/yolov3_tiny.yaml --shape 416 --json outputs/bench_tiny.json

Options other than the ones below are config keys (e.g. --pretrained for eval.py's weights,
--data_dir for its data; by default ../shared/data/coco_tiny if present, else a synthetic set).
"""
import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional

from src.cpu.process import set_up_process

set_up_process()  # first: OpenMP reads its spin count when cv2 or MindSpore loads it
import numpy as np  # noqa: E402
import mindspore as ms  # noqa: E402
from mindspore import Tensor, nn  # noqa: E402

from model_utils.config import ROOT, load_config  # noqa: E402
from model_utils.device_adapter import setup_device  # noqa: E402
from src.cpu import cpu_kernels, matmul_peaks, onednn  # noqa: E402
from src.cpu.precision import choose, has_bf16, kernels_isa, set_precision  # noqa: E402
from src.cpu.routing import use_cpu_inference_kernels  # noqa: E402
from src.data.dataset import BatchSource, CocoTrainSet, create_train_dataset  # noqa: E402
from src.data.synthetic import make_dataset  # noqa: E402
from src.engine.detector import build_detection_model, check_input_size  # noqa: E402
from src.engine.precision_timing import training_step  # noqa: E402
from src.errors import ArgumentParser, UserError, run_cli  # noqa: E402
from src.fileio import write_json  # noqa: E402
from src.formats.checkpoint import network_parameters, save_checkpoint  # noqa: E402
from src.formats.export import export_graph  # noqa: E402
from src.formats.model_card import ModelCard, card_of_config, checkpoint_entry  # noqa: E402
from src.models.spec import ModelSpec  # noqa: E402
from src.models.yolo import build_network  # noqa: E402

SHARED_COCO = os.path.join(os.path.dirname(ROOT), "shared", "data", "coco_tiny")


def run_times(fn: Callable[[], None], repeats: int, warmup: int) -> List[float]:
    """Seconds of each of `repeats` calls of fn, after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def median_seconds(fn: Callable[[], None], repeats: int, warmup: int = 2) -> float:
    return statistics.median(run_times(fn, repeats, warmup))


def in_turns(fn: Callable[[], None], precisions: List[str], repeats: int, warmup: int = 2) -> Dict[str, float]:
    """Median seconds of fn in each precision, the precisions taking turns call by call (a ratio then compares calls
    seconds apart on a shared machine); the first precision is set again at the end."""
    times: Dict[str, List[float]] = {p: [] for p in precisions}
    for i in range(warmup + repeats):
        for p in precisions:
            set_precision(p)
            t = time.perf_counter()
            fn()
            if i >= warmup:
                times[p].append(time.perf_counter() - t)
    set_precision(precisions[0])
    return {p: statistics.median(t) for p, t in times.items()}


def recorded(fn: Callable[[], None], convolutions: List[str]) -> Callable[[], None]:
    """fn, whose first call also adds the implementations of the convolution primitives MindSpore ran to
    `convolutions` (oneDNN's verbose output, on for that call only)."""
    calls = []

    def run() -> None:
        if calls:
            fn()
            return
        calls.append(1)
        with onednn.verbose_record() as lines:
            fn()
        convolutions.extend(onednn.convolution_implementations("\n".join(lines)))

    return run


def bench_mindspore(model: nn.Cell, size: int, batch: int, repeats: int, convolutions: List[str],
                    precisions: List[str]) -> Dict[str, float]:
    x = Tensor(np.random.default_rng(0).uniform(0, 1, (batch, 3, size, size)).astype(np.float32))
    return in_turns(recorded(lambda: model(x).asnumpy(), convolutions), precisions, repeats)


def export_onnx(model: nn.Cell, card: ModelCard, size: int, batch: int, folder: str) -> str:
    x = np.zeros((batch, 3, size, size), np.float32)
    return export_graph(model, Tensor(x), os.path.join(folder, f"model_b{batch}"), "ONNX",
                        dataclasses.replace(card, input_size=size))


def bench_ort(path: str, size: int, batch: int, repeats: int) -> float:
    import onnxruntime as ort
    x = np.random.default_rng(0).uniform(0, 1, (batch, 3, size, size)).astype(np.float32)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    return median_seconds(lambda: sess.run(None, {"images": x}), repeats)


def bench_deployment(onnx_paths: Dict[int, str], calibration_dir: str, size: int, letterbox: bool, repeats: int
                     ) -> Dict:
    """The exported graph's int8 copy (export.py --quantize int8, calibrated on 8 images of `calibration_dir`) in
    ONNX Runtime beside its fp32 graph, and, where OpenVINO is installed, fp32, bf16 (where the CPU has it) and
    the int8 graph in OpenVINO; the engines of each batch size take turns, so that their ratios hold on a machine
    whose speed drifts. Keys: ENGINE_b1_ms and ENGINE_b8_ips; ort_int8_speedup_bB is int8 over fp32 in ORT; only
    int8_skipped (why) where the graph cannot be calibrated (random weights whose activations overflow)."""
    from src.engine.onnx_runtime import onnxruntime_session
    from src.formats.quantize import calibration_images, quantize_int8
    images = calibration_images(calibration_dir, 8)
    results: Dict = {}
    for batch, fp32 in onnx_paths.items():
        try:
            int8 = quantize_int8(fp32, fp32[:-len(".onnx")] + "_int8.onnx", images, size, batch, letterbox)
        except UserError as e:
            results["int8_skipped"] = str(e)
            return results
        engines = {"ort_fp32": onnxruntime_session(fp32, 2), "ort_int8": onnxruntime_session(int8, 2)}
        engines.update(openvino_engines(fp32, int8))
        x = np.random.default_rng(0).uniform(0, 1, (batch, 3, size, size)).astype(np.float32)
        seconds = alternating_medians({k: (lambda run=run: run(x)) for k, run in engines.items()}, repeats)
        for name, sec in seconds.items():
            results.update({f"{name}_b1_ms": sec * 1e3} if batch == 1 else {f"{name}_b8_ips": batch / sec})
        results[f"ort_int8_speedup_b{batch}"] = seconds["ort_fp32"] / seconds["ort_int8"]
    del results["ort_fp32_b1_ms"], results["ort_fp32_b8_ips"]  # ort_infer_b1_ms and ort_infer_b8_ips measure them
    return results


def openvino_engines(fp32: str, int8: str) -> Dict[str, Callable[[np.ndarray], np.ndarray]]:
    """OpenVINO's fp32, bf16 (where its CPU plugin has it) and int8 sessions; none without OpenVINO."""
    try:
        import openvino as ov
    except ImportError:
        return {}
    from src.engine.onnx_runtime import openvino_session
    engines = {"ov_fp32": openvino_session(fp32, "f32"), "ov_int8": openvino_session(int8, "f32")}
    if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        engines["ov_bf16"] = openvino_session(fp32, "bf16")
    return engines


def alternating_medians(fns: Dict[str, Callable[[], None]], repeats: int, warmup: int = 2) -> Dict[str, float]:
    """Median seconds of each fn, the fns called in turn (A B C A B C ...) after `warmup` rounds."""
    times: Dict[str, List[float]] = {k: [] for k in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def print_deployment(r: Dict) -> None:
    """The rows of bench_deployment."""
    engines = [("ONNX Runtime int8", "ort_int8"), ("OpenVINO fp32", "ov_fp32"), ("OpenVINO bf16", "ov_bf16"),
               ("OpenVINO int8 graph", "ov_int8")]
    if "int8_skipped" in r:
        print(f"exported graph's int8 and OpenVINO figures: not measured ({r['int8_skipped']}; pass --pretrained)")
        return
    print(f"{'exported graph':32}{'batch 1 (ms)':>14}{'batch 8 (images/s)':>20}")
    for name, key in engines:
        if f"{key}_b1_ms" in r:
            print(f"{name:32}{r[f'{key}_b1_ms']:14.2f}{r[f'{key}_b8_ips']:20.2f}")
    print(f"ONNX Runtime int8 over fp32, same run, turns taken: {r['ort_int8_speedup_b1']:.2f}x at batch 1, "
          f"{r['ort_int8_speedup_b8']:.2f}x at batch 8" + ("" if "ov_fp32_b1_ms" in r else
                                                         "; OpenVINO not installed (pip install openvino)"))


def conv_gflops(onnx_path: str) -> float:
    """Convolution GFLOPs (multiply and add counted apart, as darknet counts) of a batch-1 ONNX graph."""
    import onnx
    from onnx import numpy_helper, shape_inference
    graph = shape_inference.infer_shapes(onnx.load(onnx_path)).graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.value_info}
    shapes.update({v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.output})
    weights = {w.name: numpy_helper.to_array(w).shape for w in graph.initializer}
    flops = sum(2 * np.prod(shapes[node.output[0]]) * np.prod(weights[node.input[1]][1:])
                for node in graph.node if node.op_type == "Conv")
    return float(flops) / 1e9


def best_gflops(product: Callable[[], None], n: int, repeats: int) -> float:
    """GFLOP/s of the fastest of `repeats` n x n x n float32 products (after one untimed)."""
    return 2 * n ** 3 / min(run_times(product, repeats, 1)) / 1e9


def matmul_gflops(repeats: int, n: int = 2048) -> float:
    """numpy's BLAS on all cores."""
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    return best_gflops(lambda: a @ a, n, repeats)


def bench_train(config, size: int, batch: int, repeats: int, convolutions: List[str],
                precisions: List[str]) -> Dict[str, float]:
    """Seconds of a training step in each precision (the same step, the precisions in turns)."""
    step = training_step(config, ModelSpec.from_config(config), size, batch)
    return in_turns(recorded(step, convolutions), precisions, repeats)


def bench_data(config, data_dir: str, size: int, batch: int, batches: int) -> float:
    data = CocoTrainSet(os.path.join(data_dir, "annotations", "instances_train2017.json"),
                        os.path.join(data_dir, "train2017"))
    config = config.with_values(per_batch_size=batch, training_shape=size)
    indices = [i % len(data) for i in range(batch * (batches + 1))]
    source = BatchSource(data, indices, config, ModelSpec.from_config(config), epoch=0)
    dataset = create_train_dataset(source, config.num_parallel_workers)
    it = dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)
    next(it)  # workers started
    t = time.perf_counter()
    n = sum(1 for _ in it)
    return n * batch / (time.perf_counter() - t)


def bench_eval(config, data_dir: str, weights: str, size: int) -> Dict[str, float]:
    ann = os.path.join(data_dir, "annotations", "instances_val2017.json")
    images = len(json.load(open(ann))["images"])
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, os.path.join(ROOT, "eval.py"), "--config_path", config.config_path,
                               "--data_dir", data_dir, "--pretrained", weights, "--testing_shape", str(size),
                               "--eval_dir", out, "--device_target", config.device_target,
                               "--num_classes", str(config.num_classes), "--precision", config.precision],
                              capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode:
            raise UserError(f"eval.py failed: {proc.stderr.strip().splitlines()[-1]}")
        stats = json.load(open(os.path.join(out, "stats.json")))
    return {"eval_ips": images / wall, "eval_wall_s": wall, "eval_AP": stats["AP"]}


def random_weights(network: nn.Cell, config, data_dir: str, path: str) -> str:
    """The network's initial weights with their card naming the val set's categories, then placeholders up to the
    network's class count (as train.py names a set's classes), so that eval.py can score them."""
    with open(os.path.join(data_dir, "annotations", "instances_val2017.json"), encoding="utf-8") as f:
        categories = sorted(json.load(f)["categories"], key=lambda c: c["id"])[:config.num_classes]
    free = max(c["id"] for c in categories) + 1
    extra = range(len(categories), config.num_classes)
    card = card_of_config(config)
    spec = card.spec.replace(labels=[c["name"] for c in categories] + [f"class_{i}" for i in extra],
                             coco_ids=[c["id"] for c in categories] + [free + i - len(categories) for i in extra])
    save_checkpoint(network_parameters(network), path, checkpoint_entry(dataclasses.replace(card, spec=spec)))
    return path


def run(config, size: int, repeats: int, json_path: Optional[str]) -> Dict[str, float]:
    check_input_size(size)
    # first, before MindSpore's threads run
    results: Dict[str, float] = {"numpy_matmul_gflops": matmul_gflops(repeats),
                                 "sgemm_gflops": matmul_peaks.fp32_gflops(repeats),
                                 "bf16_gemm_gflops": matmul_peaks.bf16_gflops(repeats),
                                 "int8_gemm_gops": matmul_peaks.int8_gops(repeats)}
    results["matmul_gflops"] = max(results["numpy_matmul_gflops"], results["sgemm_gflops"])
    precision, why = choose(config.precision)
    other = {"fp32": "bf16", "bf16": "fp32"}[precision] if has_bf16(kernels_isa()) else None
    precisions = [precision] + ([other] if other else [])
    convolutions: List[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        network = build_network(ModelSpec.from_config(config))
        results["params_m"] = sum(int(np.prod(p.shape)) for p in network.trainable_params()) / 1e6
        data_dir = config.data_dir
        if not data_dir:
            data_dir = SHARED_COCO if os.path.isdir(SHARED_COCO) else os.path.join(tmp, "shapes")
            if data_dir != SHARED_COCO:
                make_dataset(data_dir, 64, 32, size=size)
        weights = config.pretrained or random_weights(network, config, data_dir, os.path.join(tmp, "random.ckpt"))
        card, model = build_detection_model(config, weights)
        onnx_paths = {batch: export_onnx(model, card, size, batch, tmp) for batch in (1, 8)}
        results["gflops"] = conv_gflops(onnx_paths[1])
        use_cpu_inference_kernels(model)  # as eval.py and predict.py run it; after the export (stock ops)
        for batch, onnx_path in onnx_paths.items():
            key = "ms_infer_b1_ms" if batch == 1 else "ms_infer_b8_ips"
            for p, ms_s in bench_mindspore(model, size, batch, repeats, convolutions, precisions).items():
                results[key if p == precision else f"{p}_{key}"] = ms_s * 1e3 if batch == 1 else 8 / ms_s
            ort_s = bench_ort(onnx_path, size, batch, repeats)
            results.update({"ort_infer_b1_ms": ort_s * 1e3} if batch == 1 else {"ort_infer_b8_ips": 8 / ort_s})
        results.update(bench_deployment(onnx_paths, os.path.join(data_dir, "train2017"), size, config.letterbox,
                                        repeats))
        train_s = bench_train(config, size, 8, max(3, repeats // 2), convolutions, precisions)
        results.update({"train_ips" if p == precision else f"{p}_train_ips": 8 / s for p, s in train_s.items()})
        # a training step is about 3 forwards in FLOPs (forward, input and weight gradients)
        train_gflops = results["train_ips"] * 3 * results["gflops"]
        peak = results["matmul_gflops"] if precision == "fp32" else results["bf16_gemm_gflops"]
        results["train_peak_fraction"] = train_gflops / peak
        results["train_numpy_peak_fraction"] = train_gflops / results["numpy_matmul_gflops"]
        results["data_ips"] = bench_data(config, data_dir, size, 8, 8)
        results.update(bench_eval(config, data_dir, weights, size))
    results["conv_primitives"] = len(convolutions)
    results["ref_conv_primitives"] = len(onednn.reference_kernels(convolutions))
    usage = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    results["peak_rss_mb"] = usage / 1024
    results = {k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()}
    results.update(model=config.model_name, shape=size, machine=f"{platform.processor() or platform.machine()}, "
                   f"{os.cpu_count()} cores", mindspore=ms.__version__, onednn_isa=onednn.mindspore_isa(),
                   sgemm_isa=cpu_kernels.sgemm_isa(), precision=precision, precision_why=why)
    if json_path:
        write_json(json_path, results)
    return results


def print_table(r: Dict) -> None:
    rows = [("forward batch 1 (ms)", r["ms_infer_b1_ms"], r["ort_infer_b1_ms"], "ms_infer_b1_ms"),
            ("forward batch 8 (images/s)", r["ms_infer_b8_ips"], r["ort_infer_b8_ips"], "ms_infer_b8_ips")]
    print(f"\n{r['model']} at {r['shape']}: {r['params_m']:.2f} M parameters, {r['gflops']:.2f} GFLOPs; "
          f"{r['machine']}, MindSpore {r['mindspore']}")
    p = r["precision"]
    other = next((q for q in ("fp32", "bf16") if f"{q}_train_ips" in r), None)
    print(f"precision {p} ({r['precision_why']})")
    extra = f"{'MindSpore ' + other:>16}" if other else ""
    print(f"{'':32}{'MindSpore ' + p:>15}{'ONNX Runtime':>14}{'ratio':>8}{extra}")
    for name, a, b, key in rows:
        ratio = a / b if "ms)" in name else b / a
        print(f"{name:32}{a:15.2f}{b:14.2f}{ratio:8.2f}" + (f"{r[other + '_' + key]:16.2f}" if other else ""))
    peak = r["matmul_gflops"] if p == "fp32" else r["bf16_gemm_gflops"]
    print(f"{'train step, batch 8 (images/s)':32}{r['train_ips']:15.2f}   ({r['train_peak_fraction']:.0%} of the "
          f"{peak:.0f} GFLOP/s matmul peak; {r['train_numpy_peak_fraction']:.0%} of numpy's "
          f"{r['numpy_matmul_gflops']:.0f})" + (f"; {other}: {r[other + '_train_ips']:.2f}" if other else ""))
    print(f"{'matmul peaks (kernels oneDNN)':32}fp32 {r['sgemm_gflops']:.0f} GFLOP/s, bf16 {r['bf16_gemm_gflops']:.0f} "
          f"GFLOP/s, int8 (u8s8s32) {r['int8_gemm_gops']:.0f} GOP/s")
    print(f"{'data pipeline (images/s)':32}{r['data_ips']:15.2f}")
    print(f"{'eval.py end to end (images/s)':32}{r['eval_ips']:15.2f}   ({r['eval_wall_s']:.1f} s wall)")
    print(f"{'peak RSS (MB)':32}{r['peak_rss_mb']:15.0f}")
    print(f"MindSpore's oneDNN: {r['onednn_isa']}, {r['conv_primitives']:.0f} convolution primitives run, "
          f"{r['ref_conv_primitives']:.0f} through a reference implementation; kernels' sgemm: {r['sgemm_isa']} "
          f"({r['sgemm_gflops']:.0f} GFLOP/s; numpy's BLAS {r['numpy_matmul_gflops']:.0f})")


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--shape", type=int, default=416, help="input size")
    parser.add_argument("--json", default="", help="write the results here")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per measurement")
    args, rest = parser.parse_known_args()
    config = load_config(rest, description=__doc__)
    setup_device(config)
    results = run(config, args.shape, args.repeats, args.json)
    print_table(results)
    print_deployment(results)


if __name__ == "__main__":
    run_cli(main)
