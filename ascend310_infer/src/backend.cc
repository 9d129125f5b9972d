#include "backend.h"

namespace yolo {

std::unique_ptr<Backend> CreateBackend(const BackendOptions& options) {
  if (options.device_type == "CPU") {
    if (!options.aipp_path.empty()) throw UserError("--aipp_path applies to --device_type Ascend only");
    return CreateOpenCvBackend(options.model_path);
  }
#ifdef YOLO_WITH_MINDSPORE
  return CreateMindSporeBackend(options.model_path, options.device_id, options.aipp_path);
#else
  throw UserError(
      "this build has no Ascend backend: MindSpore's C++ API (include/api/model.h, lib/libmindspore.so) was not "
      "found when it was built; rebuild with MINDSPORE_PATH=<mindspore package folder> bash build.sh");
#endif
}

Rows RowsFromOutput(const float* data, const std::vector<int64_t>& shape) {
  if (shape.size() != 3 || shape[0] != 1 || shape[1] < 1 || shape[2] <= 5) {
    std::string dims;
    for (int64_t d : shape) dims += (dims.empty() ? "" : ", ") + std::to_string(d);
    throw UserError("the model's output has shape [" + dims +
                    "]; expected [1, N, 5 + num_classes] (export.py with --batch_size 1)");
  }
  Rows rows;
  rows.num_rows = static_cast<int>(shape[1]);
  rows.num_cols = static_cast<int>(shape[2]);
  rows.values.assign(data, data + static_cast<size_t>(rows.num_rows) * rows.num_cols);
  return rows;
}

}  // namespace yolo
