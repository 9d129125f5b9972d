// The one interface between the shared pipeline and an inference runtime.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>
#include <string>

#include <opencv2/core.hpp>

#include "utils.h"

namespace yolo {

class Backend {
 public:
  virtual ~Backend() = default;
  // The network input for one preprocessed size x size BGR canvas.
  virtual cv::Mat MakeInput(const cv::Mat& canvas_bgr) const = 0;
  // One forward pass of a batch-1 graph.
  virtual Rows Infer(const cv::Mat& input) = 0;
};

struct BackendOptions {
  std::string device_type;  // "CPU" or "Ascend"
  std::string model_path;
  int device_id = 0;
  std::string aipp_path;  // Ascend only; empty: the graph takes float32 NCHW in [0, 1]
};

// The backend for options.device_type; UserError when it cannot be created.
std::unique_ptr<Backend> CreateBackend(const BackendOptions& options);

// CPU: an ONNX file in OpenCV's DNN module.
std::unique_ptr<Backend> CreateOpenCvBackend(const std::string& onnx_path);

#ifdef YOLO_WITH_MINDSPORE
// Ascend 310: a MINDIR file through MindSpore's C++ API.
std::unique_ptr<Backend> CreateMindSporeBackend(const std::string& mindir_path, int device_id,
                                                const std::string& aipp_path);
#endif

// Checks the [1, N, C] output shape (C > 5) and copies the rows.
Rows RowsFromOutput(const float* data, const std::vector<int64_t>& shape);

}  // namespace yolo
