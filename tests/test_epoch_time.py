"""tools/epoch_time.py, the README's COCO epoch times: it reads train.py's own log lines, so a change of their
format or of train.py's options shows here."""
import re

from conftest import TINY_CFG, run_script
from test_cli_errors import assert_clean_error

SMALL = ["--", "--training_shape", "64", "--per_batch_size", "2", "--num_parallel_workers", "1"]


def test_extrapolates_the_median_rate_of_the_iterations_after_the_first(tmp_path):
    from src.data.synthetic import make_dataset
    make_dataset(str(tmp_path / "set"), 8, 2, size=64, min_size=12, max_size=30)
    out = run_script("tools/epoch_time.py", "--config_path", TINY_CFG, "--data_dir", str(tmp_path / "set"),
                     *SMALL).stdout
    found = re.search(r"yolov3_tiny\.yaml: ([0-9.]+) images/s \(median of iterations 2-4 of one epoch on .*\); "
                      r"one COCO train2017 epoch \(118287 images\): ([0-9.]+) h \(extrapolated\)", out)
    assert found, out
    rate, hours = float(found.group(1)), float(found.group(2))
    assert rate > 0 and abs(hours - 118287 / rate / 3600) <= 0.05 + 0.01 * hours


def test_a_set_too_small_for_a_slice_is_one_error(tmp_path):
    from src.data.synthetic import make_dataset
    make_dataset(str(tmp_path / "set"), 2, 2, size=64, min_size=12, max_size=30)
    proc = run_script("tools/epoch_time.py", "--config_path", TINY_CFG, "--data_dir", str(tmp_path / "set"),
                      *SMALL, check=False)
    assert_clean_error(proc, "gave 1 iterations; the slice needs three or more")
