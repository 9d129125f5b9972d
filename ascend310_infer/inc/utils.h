// Code shared by every backend: image listing and reading, the eval.py preprocessing,
// the non-finite row filter, score filter, per-class NMS and top-k (src/nms.py), the box
// mapping back to the image (src/transforms.py), the clipping to it (src/detector.py) and
// the result files.
#pragma once

#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

namespace yolo {

// A problem with the user's input: reported as one "error: ..." line, exit code 1.
class UserError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// network pixel = image pixel * scale + offset (src/transforms.py's Mapping).
struct Mapping {
  double scale_x;
  double scale_y;
  int dx;
  int dy;
};

// A size x size BGR uint8 image as the network sees it, how it maps to the original, and
// the original's size.
struct Preprocessed {
  cv::Mat canvas_bgr;
  Mapping mapping;
  cv::Size image_size;
};

struct Box {
  float x;
  float y;
  float w;
  float h;
};

struct Detection {
  Box box;
  float score;
  int label;
};

// One image's detections, and how many of its rows were left out as non-finite: an infinity or NaN, or
// a box area over half the float range (one NMS cannot compare).
struct Selection {
  std::vector<Detection> detections;
  int nonfinite_rows = 0;
};

// The exported graph's output for one image: num_rows x num_cols floats, columns
// cx, cy, w, h (input pixels), objectness, class probabilities.
struct Rows {
  int num_rows = 0;
  int num_cols = 0;
  std::vector<float> values;

  const float* Row(int i) const { return values.data() + static_cast<size_t>(i) * num_cols; }
};

// eval.py's defaults (default_config.yaml): eval_ignore_threshold, nms_thresh, max_boxes.
// The thresholds are float because the Python code compares them in float32.
struct SelectParams {
  float score_threshold = 0.005f;
  float iou_threshold = 0.45f;
  int max_boxes = 100;
};

constexpr int kPadValue = 127;

// Image files (by extension) directly in `dir`, sorted by name.
std::vector<std::string> ListImages(const std::string& dir);

// Resize keeping the aspect ratio, centred on a grey canvas (src/transforms.py letterbox).
Preprocessed Letterbox(const cv::Mat& bgr, int size);
// Resize to size x size ignoring the aspect ratio (src/transforms.py stretch).
Preprocessed Stretch(const cv::Mat& bgr, int size);
Preprocessed Preprocess(const cv::Mat& bgr, int size, bool letterbox);

// A 1 x 3 x S x S float32 RGB blob in [0, 1], computed as src/transforms.py preprocess does.
cv::Mat ToChwBlob(const cv::Mat& canvas_bgr);

// Greedy NMS on (x, y, w, h) boxes: indices kept, highest score first (src/nms.py nms); stops
// after max_kept boxes.
std::vector<int> Nms(const std::vector<Box>& boxes, const std::vector<float>& scores, float iou_threshold,
                     int max_kept = std::numeric_limits<int>::max());

// Non-finite rows dropped and counted, then score filter, per-class NMS and top-k on one
// image's rows; boxes stay cx, cy, w, h in network pixels (src/nms.py select_detections).
Selection SelectDetections(const Rows& rows, const SelectParams& params);

// Network-pixel (cx, cy, w, h) -> image-pixel (x, y, w, h) (src/transforms.py boxes_to_image).
Box ToImageBox(const Box& cxcywh, const Mapping& mapping);

// An image-pixel (x, y, w, h) box cut to the image, as darknet's COCO writer does; one wholly
// outside becomes empty on the border (src/detector.py clip_to_image).
Box ClipToImage(const Box& xywh, const cv::Size& image_size);

// SelectDetections, then every box mapped to the image and clipped to it.
Selection Decode(const Rows& rows, const Mapping& mapping, const cv::Size& image_size, const SelectParams& params);

// One line per detection: "label score x y w h", floats with 9 significant digits (exact for
// float32). Written to a temporary file and renamed.
void WriteDetections(const std::string& path, const std::vector<Detection>& detections);

// Writes `text` to `path` through a temporary file and a rename.
void WriteFileAtomically(const std::string& path, const std::string& text);

}  // namespace yolo
