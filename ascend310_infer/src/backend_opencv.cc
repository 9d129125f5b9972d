// CPU backend: the exported ONNX, lowered by onnx_for_opencv.py, in OpenCV's DNN module.
#include <opencv2/dnn.hpp>

#include "backend.h"

namespace yolo {
namespace {

// What went wrong, in one line: the innermost OpenCV message without its "error: (code:name) " prefix.
std::string Reason(const cv::Exception& e) {
  std::string text = e.err;
  const size_t nested = text.rfind("error: (");
  const size_t start = nested == std::string::npos ? std::string::npos : text.find(") ", nested);
  if (start != std::string::npos) text = text.substr(start + 2);
  return text.substr(0, text.find('\n'));
}

class OpenCvBackend : public Backend {
 public:
  explicit OpenCvBackend(const std::string& onnx_path) {
    try {
      net_ = cv::dnn::readNetFromONNX(onnx_path);
    } catch (const cv::Exception& e) {
      throw UserError("OpenCV DNN cannot load " + onnx_path + " (" + Reason(e) +
                      "); give the exported ONNX lowered by ascend310_infer/onnx_for_opencv.py");
    }
    net_.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
    net_.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
  }

  cv::Mat MakeInput(const cv::Mat& canvas_bgr) const override { return ToChwBlob(canvas_bgr); }

  Rows Infer(const cv::Mat& input) override {
    cv::Mat out;
    try {
      net_.setInput(input);
      out = net_.forward();
    } catch (const cv::Exception& e) {
      throw UserError("inference failed (" + Reason(e) + "); is --image_size the size the model was exported at?");
    }
    std::vector<int64_t> shape(out.size.p, out.size.p + out.dims);
    return RowsFromOutput(out.ptr<float>(), shape);
  }

 private:
  cv::dnn::Net net_;
};

}  // namespace

std::unique_ptr<Backend> CreateOpenCvBackend(const std::string& onnx_path) {
  return std::make_unique<OpenCvBackend>(onnx_path);
}

}  // namespace yolo
