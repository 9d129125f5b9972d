// Runs one shared function on files written by tests/test_cpp_infer.py, which compares the
// results with the Python implementation:
//   yolo_check nms BOXES.f32 N IOU OUT.txt                  (N x [x y w h score] -> kept indices)
//   yolo_check decode ROWS.f32 N COLS SX SY DX DY IMG_W IMG_H SCORE_THR IOU_THR MAX_BOXES OUT.txt
//                                                            (prints the non-finite row count)
//   yolo_check preprocess IMAGE SIZE LETTERBOX(0|1) OUT.f32  (prints "sx sy dx dy")
//   yolo_check card MODEL                                    (prints the model card's fields, one a line)
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <opencv2/imgcodecs.hpp>

#include "model_card.h"
#include "utils.h"

namespace {

std::vector<float> ReadFloats(const std::string& path, size_t count) {
  std::vector<float> values(count);
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char*>(values.data()), static_cast<std::streamsize>(count * sizeof(float)));
  if (!in) throw std::runtime_error("cannot read " + std::to_string(count) + " floats from " + path);
  return values;
}

void WriteFloats(const std::string& path, const float* data, size_t count) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(count * sizeof(float)));
  if (!out) throw std::runtime_error("cannot write " + path);
}

int CheckNms(char** a) {
  const int n = std::stoi(a[3]);
  const std::vector<float> values = ReadFloats(a[2], static_cast<size_t>(n) * 5);
  std::vector<yolo::Box> boxes;
  std::vector<float> scores;
  for (int i = 0; i < n; ++i) {
    const float* v = &values[static_cast<size_t>(i) * 5];
    boxes.push_back({v[0], v[1], v[2], v[3]});
    scores.push_back(v[4]);
  }
  std::ofstream out(a[5]);
  for (int k : yolo::Nms(boxes, scores, std::stof(a[4]))) out << k << "\n";
  return 0;
}

int CheckDecode(char** a) {
  yolo::Rows rows;
  rows.num_rows = std::stoi(a[3]);
  rows.num_cols = std::stoi(a[4]);
  rows.values = ReadFloats(a[2], static_cast<size_t>(rows.num_rows) * rows.num_cols);
  const yolo::Mapping mapping{std::stod(a[5]), std::stod(a[6]), std::stoi(a[7]), std::stoi(a[8])};
  const cv::Size image_size(std::stoi(a[9]), std::stoi(a[10]));
  const yolo::SelectParams params{std::stof(a[11]), std::stof(a[12]), std::stoi(a[13])};
  const yolo::Selection selection = yolo::Decode(rows, mapping, image_size, params);
  yolo::WriteDetections(a[14], selection.detections);
  std::printf("%d\n", selection.nonfinite_rows);
  return 0;
}

int CheckPreprocess(char** a) {
  const cv::Mat img = cv::imread(a[2], cv::IMREAD_COLOR);
  if (img.empty()) throw std::runtime_error(std::string("cannot read ") + a[2]);
  const yolo::Preprocessed p = yolo::Preprocess(img, std::stoi(a[3]), std::string(a[4]) == "1");
  const cv::Mat blob = yolo::ToChwBlob(p.canvas_bgr);
  WriteFloats(a[5], blob.ptr<float>(), blob.total());
  std::printf("%.17g %.17g %d %d\n", p.mapping.scale_x, p.mapping.scale_y, p.mapping.dx, p.mapping.dy);
  return 0;
}

}  // namespace

int CheckCard(char** a) {
  const yolo::ModelCard card = yolo::ReadModelCard(a[2]);
  std::cout << "found " << card.found << "\ninput_size " << card.input_size << "\nletterbox " << card.letterbox
            << "\nnum_classes " << card.num_classes << "\n";
  for (size_t k = 0; k < card.names.size(); ++k) std::cout << card.category_ids[k] << " " << card.names[k] << "\n";
  return 0;
}

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  try {
    if (mode == "nms" && argc == 6) return CheckNms(argv);
    if (mode == "decode" && argc == 15) return CheckDecode(argv);
    if (mode == "preprocess" && argc == 6) return CheckPreprocess(argv);
    if (mode == "card" && argc == 3) return CheckCard(argv);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  std::cerr << "usage: yolo_check nms|decode|preprocess|card ... (see the source)\n";
  return 2;
}
