#include "utils.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <set>

#include <opencv2/imgproc.hpp>

namespace fs = std::filesystem;

namespace yolo {
namespace {

const std::set<std::string> kImageExtensions = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"};

std::string Lowercase(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  return text;
}

bool IsImageFile(const fs::directory_entry& entry) {
  return entry.is_regular_file() && kImageExtensions.count(Lowercase(entry.path().extension().string())) > 0;
}

// Python's round() on a double: to nearest, ties to even (the default FP rounding mode).
int RoundHalfEven(double value) { return static_cast<int>(std::nearbyint(value)); }

// A detection candidate before NMS: the network-space box in both forms src/nms.py uses.
struct Candidate {
  Box cxcywh;
  Box xywh;
  float score;
  int label;
};

// The largest box area NMS takes: half the float range, so that the IoU's union of two areas is finite
// (src/nms.py MAX_AREA).
constexpr float kMaxArea = std::numeric_limits<float>::max() / 2;

// No infinity or NaN, and a box area NMS can take.
bool IsFiniteRow(const float* row, int num_cols) {
  return std::all_of(row, row + num_cols, [](float v) { return std::isfinite(v); }) && row[2] * row[3] <= kMaxArea;
}

// Candidates above the threshold from the finite rows (IsFiniteRow); the others are counted.
std::vector<Candidate> ScoreFilter(const Rows& rows, float score_threshold, int& nonfinite_rows) {
  std::vector<Candidate> candidates;
  for (int i = 0; i < rows.num_rows; ++i) {
    const float* row = rows.Row(i);
    if (!IsFiniteRow(row, rows.num_cols)) {
      ++nonfinite_rows;
      continue;
    }
    const Box cxcywh{row[0], row[1], row[2], row[3]};
    const Box xywh{row[0] - row[2] / 2.0f, row[1] - row[3] / 2.0f, row[2], row[3]};
    for (int c = 5; c < rows.num_cols; ++c) {
      const float score = row[4] * row[c];
      if (score > score_threshold) candidates.push_back({cxcywh, xywh, score, c - 5});
    }
  }
  return candidates;
}

// Candidate indices per label, labels ascending, indices in candidate order.
std::map<int, std::vector<int>> GroupByLabel(const std::vector<Candidate>& candidates) {
  std::map<int, std::vector<int>> groups;
  for (int i = 0; i < static_cast<int>(candidates.size()); ++i) groups[candidates[i].label].push_back(i);
  return groups;
}

// A class never contributes more than max_boxes detections to the top-k, so its NMS can stop there:
// a box kept later has max_boxes boxes of its class before it in the final score order.
std::vector<int> NmsWithinGroup(const std::vector<Candidate>& candidates, const std::vector<int>& members,
                                const SelectParams& params) {
  std::vector<Box> boxes;
  std::vector<float> scores;
  for (int m : members) {
    boxes.push_back(candidates[m].xywh);
    scores.push_back(candidates[m].score);
  }
  std::vector<int> kept;
  for (int k : Nms(boxes, scores, params.iou_threshold, params.max_boxes)) kept.push_back(members[k]);
  return kept;
}

// Indices ordered by descending score, ties in their original order (numpy's stable argsort of -score).
std::vector<int> OrderByScore(const std::vector<float>& scores) {
  std::vector<int> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return scores[a] > scores[b]; });
  return order;
}

// IoU as src/nms.py computes it, in float32.
float Iou(const Box& a, const Box& b) {
  const float iw = std::max(0.0f, std::min(a.x + a.w, b.x + b.w) - std::max(a.x, b.x));
  const float ih = std::max(0.0f, std::min(a.y + a.h, b.y + b.h) - std::max(a.y, b.y));
  const float inter = iw * ih;
  const float uni = a.w * a.h + b.w * b.h - inter;
  return uni > 0.0f ? inter / std::max(uni, 1e-12f) : 0.0f;
}

}  // namespace

std::vector<std::string> ListImages(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw UserError("image directory not found: " + dir);
  std::vector<std::string> paths;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (IsImageFile(entry)) paths.push_back(entry.path().string());
  }
  if (ec) throw UserError("cannot list " + dir + ": " + ec.message());
  std::sort(paths.begin(), paths.end());
  return paths;
}

Preprocessed Letterbox(const cv::Mat& bgr, int size) {
  const double scale = std::min(static_cast<double>(size) / bgr.cols, static_cast<double>(size) / bgr.rows);
  const int nw = RoundHalfEven(bgr.cols * scale);
  const int nh = RoundHalfEven(bgr.rows * scale);
  const int dx = (size - nw) / 2;
  const int dy = (size - nh) / 2;
  cv::Mat canvas(size, size, CV_8UC3, cv::Scalar::all(kPadValue));
  cv::Mat resized;
  cv::resize(bgr, resized, cv::Size(nw, nh), 0, 0, cv::INTER_LINEAR);
  resized.copyTo(canvas(cv::Rect(dx, dy, nw, nh)));
  return {canvas, {scale, scale, dx, dy}, bgr.size()};
}

Preprocessed Stretch(const cv::Mat& bgr, int size) {
  cv::Mat resized;
  cv::resize(bgr, resized, cv::Size(size, size), 0, 0, cv::INTER_LINEAR);
  return {resized, {static_cast<double>(size) / bgr.cols, static_cast<double>(size) / bgr.rows, 0, 0}, bgr.size()};
}

Preprocessed Preprocess(const cv::Mat& bgr, int size, bool letterbox) {
  return letterbox ? Letterbox(bgr, size) : Stretch(bgr, size);
}

cv::Mat ToChwBlob(const cv::Mat& canvas_bgr) {
  const int h = canvas_bgr.rows;
  const int w = canvas_bgr.cols;
  const size_t plane = static_cast<size_t>(h) * w;
  const float inv255 = static_cast<float>(1.0 / 255.0);
  cv::Mat blob(std::vector<int>{1, 3, h, w}, CV_32F);
  float* out = blob.ptr<float>();
  for (int y = 0; y < h; ++y) {
    const cv::Vec3b* row = canvas_bgr.ptr<cv::Vec3b>(y);
    for (int x = 0; x < w; ++x) {
      const size_t at = static_cast<size_t>(y) * w + x;
      for (int c = 0; c < 3; ++c) out[c * plane + at] = static_cast<float>(row[x][2 - c]) * inv255;
    }
  }
  return blob;
}

std::vector<int> Nms(const std::vector<Box>& boxes, const std::vector<float>& scores, float iou_threshold,
                     int max_kept) {
  std::vector<int> order = OrderByScore(scores);
  std::vector<int> kept;
  while (!order.empty() && static_cast<int>(kept.size()) < max_kept) {
    const int best = order.front();
    kept.push_back(best);
    std::vector<int> rest;
    for (size_t k = 1; k < order.size(); ++k) {
      if (Iou(boxes[best], boxes[order[k]]) <= iou_threshold) rest.push_back(order[k]);
    }
    order.swap(rest);
  }
  return kept;
}

Selection SelectDetections(const Rows& rows, const SelectParams& params) {
  Selection selection;
  const std::vector<Candidate> candidates = ScoreFilter(rows, params.score_threshold, selection.nonfinite_rows);
  std::vector<int> kept;
  for (const auto& [label, members] : GroupByLabel(candidates)) {
    const std::vector<int> group_kept = NmsWithinGroup(candidates, members, params);
    kept.insert(kept.end(), group_kept.begin(), group_kept.end());
  }
  std::vector<float> kept_scores;
  for (int k : kept) kept_scores.push_back(candidates[k].score);
  for (int k : OrderByScore(kept_scores)) {
    if (static_cast<int>(selection.detections.size()) == params.max_boxes) break;
    const Candidate& c = candidates[kept[k]];
    selection.detections.push_back({c.cxcywh, c.score, c.label});
  }
  return selection;
}

Box ToImageBox(const Box& cxcywh, const Mapping& mapping) {
  const float sx = static_cast<float>(mapping.scale_x);
  const float sy = static_cast<float>(mapping.scale_y);
  return {(cxcywh.x - cxcywh.w / 2.0f - static_cast<float>(mapping.dx)) / sx,
          (cxcywh.y - cxcywh.h / 2.0f - static_cast<float>(mapping.dy)) / sy, cxcywh.w / sx, cxcywh.h / sy};
}

Box ClipToImage(const Box& xywh, const cv::Size& image_size) {
  const float w = static_cast<float>(image_size.width);
  const float h = static_cast<float>(image_size.height);
  const auto clip = [](float v, float hi) { return std::min(std::max(v, 0.0f), hi); };
  const float x1 = clip(xywh.x, w);
  const float y1 = clip(xywh.y, h);
  const float x2 = clip(xywh.x + xywh.w, w);
  const float y2 = clip(xywh.y + xywh.h, h);
  return {x1, y1, x2 - x1, y2 - y1};
}

Selection Decode(const Rows& rows, const Mapping& mapping, const cv::Size& image_size, const SelectParams& params) {
  Selection selection = SelectDetections(rows, params);
  for (Detection& d : selection.detections) d.box = ClipToImage(ToImageBox(d.box, mapping), image_size);
  return selection;
}

void WriteDetections(const std::string& path, const std::vector<Detection>& detections) {
  std::string text;
  char line[160];
  for (const Detection& d : detections) {
    std::snprintf(line, sizeof(line), "%d %.9g %.9g %.9g %.9g %.9g\n", d.label, d.score, d.box.x, d.box.y,
                  d.box.w, d.box.h);
    text += line;
  }
  WriteFileAtomically(path, text);
}

void WriteFileAtomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out.flush()) throw std::runtime_error("cannot write " + tmp);
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw std::runtime_error("cannot rename " + tmp + " to " + path + ": " + ec.message());
}

}  // namespace yolo
