"""benchmark.py runs every measurement and writes the keys the README table is built from."""
import json

from conftest import TINY_CFG, run_script

KEYS = {"ms_infer_b1_ms", "ort_infer_b1_ms", "ms_infer_b8_ips", "ort_infer_b8_ips", "train_ips", "data_ips",
        "eval_ips", "peak_rss_mb"}


def test_benchmark_writes_all_keys(tmp_path):
    from src.synthetic import make_dataset
    make_dataset(str(tmp_path / "data"), 16, 8, size=128, min_size=20, max_size=40)
    out = tmp_path / "bench.json"
    proc = run_script("benchmark.py", "--config_path", TINY_CFG, "--shape", "128", "--repeats", "1",
                      "--data_dir", str(tmp_path / "data"), "--num_classes", "3", "--json", str(out))
    result = json.loads(out.read_text())
    assert KEYS <= set(result) and all(result[k] > 0 for k in KEYS)
    assert "ONNX Runtime" in proc.stdout
