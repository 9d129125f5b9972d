// YOLOv3 inference on a folder of images: one result file per image in result_Files/, the mean
// time per image in time_Result/. The backend (OpenCV DNN on CPU, MindSpore on Ascend 310) only
// runs the graph; reading, preprocessing, NMS and results are shared (utils.cc).
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <sstream>

#include <opencv2/core/utils/logger.hpp>
#include <opencv2/imgcodecs.hpp>

#include "backend.h"
#include "flags.h"
#include "model_card.h"
#include "utils.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace yolo {
namespace {

const char kResultDir[] = "result_Files";
const char kTimeDir[] = "time_Result";
const char kCardFile[] = "model_card.json";  // the card, for postprocess.py
constexpr int kSizeWithoutCard = 416;

// How images are prepared for the model: from the flags, else its card.
struct Input {
  int size;
  bool letterbox;
};

struct RunStats {
  int images = 0;
  int skipped = 0;
  int nonfinite_rows = 0;  // rows left out before NMS as non-finite (Selection)
  double infer_ms = 0.0;  // graph execution only
  double total_ms = 0.0;  // read, preprocess, infer, NMS, write
};

double Milliseconds(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// The preprocessed image, or nothing (with a warning) when it cannot be read.
std::optional<Preprocessed> ReadImage(const std::string& path, const Input& input) {
  try {
    const cv::Mat img = cv::imread(path, cv::IMREAD_COLOR);
    if (!img.empty()) return Preprocess(img, input.size, input.letterbox);
  } catch (const cv::Exception&) {
    // a decoder or resize failure makes the image unreadable too
  }
  std::cerr << "warning: skipping unreadable image " << path << "\n";
  return std::nullopt;
}

// One graph run on a grey canvas, so that one-off setup is not timed; checks the class count against the card.
void WarmUp(Backend& backend, int size, const ModelCard& card) {
  const Rows rows = backend.Infer(backend.MakeInput(cv::Mat(size, size, CV_8UC3, cv::Scalar::all(kPadValue))));
  if (card.found && rows.num_cols - 5 != card.num_classes) {
    throw UserError("the model's output has " + std::to_string(rows.num_cols - 5) + " classes, its card (" +
                    card.source + ") " + std::to_string(card.num_classes));
  }
}

// The flags' input size and letterbox, else the card's; a flag that contradicts the card is an error.
Input ResolveInput(const Options& options, const ModelCard& card) {
  if (card.found && options.image_size && *options.image_size != card.input_size) {
    throw UserError("--image_size " + std::to_string(*options.image_size) + " contradicts the model card of " +
                    card.source + ": input_size " + std::to_string(card.input_size));
  }
  if (card.found && options.letterbox && *options.letterbox != card.letterbox) {
    throw UserError(std::string("--letterbox ") + (*options.letterbox ? "true" : "false") +
                    " contradicts the model card of " + card.source + ": letterbox " +
                    (card.letterbox ? "true" : "false"));
  }
  if (card.found) return {card.input_size, card.letterbox};
  return {options.image_size.value_or(kSizeWithoutCard), options.letterbox.value_or(true)};
}

std::string Describe(const ModelCard& card, const Input& input, const std::string& model_path) {
  std::string text = "input " + std::to_string(input.size) + (input.letterbox ? ", letterbox" : ", stretch");
  if (!card.found) return "no model card in " + model_path + ": " + text + " (from the flags or the defaults)";
  text = "model card of " + card.source + ": " + std::to_string(card.num_classes) + " classes (";
  for (int k = 0; k < card.num_classes && k < 5; ++k) {
    text += (k ? ", " : "") + std::to_string(card.category_ids[k]) + " " + card.names[k];
  }
  return text + (card.num_classes > 5 ? ", ...)" : ")") + ", input " + std::to_string(input.size) +
         (input.letterbox ? ", letterbox" : ", stretch");
}

void DetectOne(Backend& backend, const std::string& path, const Input& preparation, RunStats& stats) {
  const Clock::time_point start = Clock::now();
  const std::optional<Preprocessed> image = ReadImage(path, preparation);
  if (!image) {
    ++stats.skipped;
    return;
  }
  const cv::Mat input = backend.MakeInput(image->canvas_bgr);
  const Clock::time_point infer_start = Clock::now();
  const Rows rows = backend.Infer(input);
  stats.infer_ms += Milliseconds(Clock::now() - infer_start);
  const std::string name = fs::path(path).filename().string();
  const Selection selection = Decode(rows, image->mapping, image->image_size, SelectParams{});
  stats.nonfinite_rows += selection.nonfinite_rows;
  WriteDetections(std::string(kResultDir) + "/" + name + ".txt", selection.detections);
  stats.total_ms += Milliseconds(Clock::now() - start);
  ++stats.images;
}

std::string TimingReport(const RunStats& stats) {
  char text[512];
  std::snprintf(text, sizeof(text),
                "NN inference cost average time: %.3f ms of infer_count %d\n"
                "end-to-end average time (read, preprocess, infer, NMS, write): %.3f ms per image\n"
                "images: %d, skipped unreadable: %d\n"
                "non-finite rows dropped before NMS: %d\n",
                stats.infer_ms / stats.images, stats.images, stats.total_ms / stats.images, stats.images,
                stats.skipped, stats.nonfinite_rows);
  return text;
}

int Run(const Options& options) {
  const std::vector<std::string> paths = ListImages(options.dataset_path);
  if (paths.empty()) throw UserError("no images (.jpg, .jpeg, .png, .bmp, .tif, .webp) in " + options.dataset_path);
  const ModelCard card = ReadModelCard(options.model_path);
  const Input input = ResolveInput(options, card);
  std::unique_ptr<Backend> backend =
      CreateBackend({options.device_type, options.model_path, options.device_id, options.aipp_path});
  WarmUp(*backend, input.size, card);
  std::cout << Describe(card, input, options.model_path) << "\n";
  fs::create_directories(kResultDir);
  fs::create_directories(kTimeDir);
  const std::string card_file = std::string(kResultDir) + "/" + kCardFile;
  if (card.found) {
    WriteFileAtomically(card_file, card.json);
  } else {
    fs::remove(card_file);
  }
  RunStats stats;
  for (const std::string& path : paths) DetectOne(*backend, path, input, stats);
  if (stats.images == 0) {
    throw UserError("none of the " + std::to_string(paths.size()) + " images in " + options.dataset_path +
                    " could be read");
  }
  const std::string report = TimingReport(stats);
  WriteFileAtomically(std::string(kTimeDir) + "/test_perform_static.txt", report);
  std::cout << report;
  return 0;
}

std::string FirstLine(const std::string& text) { return text.substr(0, text.find('\n')); }

}  // namespace
}  // namespace yolo

int main(int argc, char** argv) {
  cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_SILENT);
  try {
    const yolo::Options options = yolo::ParseFlags(argc, argv);
    if (options.help) {
      std::cout << yolo::Usage();
      return 0;
    }
    return yolo::Run(options);
  } catch (const cv::Exception& e) {
    std::cerr << "error: OpenCV: " << yolo::FirstLine(e.err) << "\n";
  } catch (const std::exception& e) {
    std::cerr << "error: " << yolo::FirstLine(e.what()) << "\n";
  }
  return 1;
}
