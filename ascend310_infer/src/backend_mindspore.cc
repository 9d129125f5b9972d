// Ascend 310 backend: a MINDIR file through MindSpore's C++ API (compiled only when CMake
// finds include/api/model.h and lib/libmindspore.so under MINDSPORE_PATH).
#include <opencv2/imgproc.hpp>

#include "backend.h"
#include "include/api/context.h"
#include "include/api/model.h"
#include "include/api/serialization.h"
#include "include/api/types.h"

namespace yolo {
namespace {

std::shared_ptr<mindspore::Context> AscendContext(int device_id, const std::string& aipp_path) {
  auto device = std::make_shared<mindspore::Ascend310DeviceInfo>();
  device->SetDeviceID(device_id);
  if (!aipp_path.empty()) device->SetInsertOpConfigPath(aipp_path);
  auto context = std::make_shared<mindspore::Context>();
  context->MutableDeviceInfo().push_back(device);
  return context;
}

class MindSporeBackend : public Backend {
 public:
  MindSporeBackend(const std::string& mindir_path, int device_id, const std::string& aipp_path)
      : uses_aipp_(!aipp_path.empty()) {
    mindspore::Graph graph;
    if (mindspore::Serialization::Load(mindir_path, mindspore::ModelType::kMindIR, &graph) != mindspore::kSuccess) {
      throw UserError("MindSpore cannot load " + mindir_path + " as MINDIR");
    }
    if (model_.Build(mindspore::GraphCell(graph), AscendContext(device_id, aipp_path)) != mindspore::kSuccess) {
      throw UserError("MindSpore cannot build " + mindir_path + " on Ascend device " + std::to_string(device_id));
    }
    std::vector<mindspore::MSTensor> inputs = model_.GetInputs();
    if (inputs.size() != 1) throw UserError(mindir_path + " must have exactly one input");
    input_ = inputs.front();
  }

  // With AIPP (aipp.cfg) the device takes RGB uint8 HWC and normalises it to [0, 1] itself.
  cv::Mat MakeInput(const cv::Mat& canvas_bgr) const override {
    if (!uses_aipp_) return ToChwBlob(canvas_bgr);
    cv::Mat rgb;
    cv::cvtColor(canvas_bgr, rgb, cv::COLOR_BGR2RGB);
    return rgb;
  }

  Rows Infer(const cv::Mat& input) override {
    const size_t bytes = input.total() * input.elemSize();
    if (bytes != input_.DataSize()) {
      throw UserError("the model takes " + std::to_string(input_.DataSize()) + " input bytes, the image gives " +
                      std::to_string(bytes) + "; is --image_size the size the model was exported at?");
    }
    std::vector<mindspore::MSTensor> inputs{
        mindspore::MSTensor(input_.Name(), input_.DataType(), input_.Shape(), input.data, bytes)};
    std::vector<mindspore::MSTensor> outputs;
    if (model_.Predict(inputs, &outputs) != mindspore::kSuccess || outputs.empty()) {
      throw std::runtime_error("MindSpore Predict failed");
    }
    const mindspore::MSTensor& out = outputs.front();
    if (out.DataType() != mindspore::DataType::kNumberTypeFloat32) {
      throw UserError("the model's output is not float32");
    }
    std::shared_ptr<const void> data = out.Data();
    return RowsFromOutput(static_cast<const float*>(data.get()), out.Shape());
  }

 private:
  bool uses_aipp_;
  mindspore::Model model_;
  mindspore::MSTensor input_;
};

}  // namespace

std::unique_ptr<Backend> CreateMindSporeBackend(const std::string& mindir_path, int device_id,
                                                const std::string& aipp_path) {
  return std::make_unique<MindSporeBackend>(mindir_path, device_id, aipp_path);
}

}  // namespace yolo
