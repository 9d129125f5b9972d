// Command-line flags of the inference app: --name=value or --name value.
#pragma once

#include <optional>
#include <string>

namespace yolo {

struct Options {
  std::string model_path;
  std::string dataset_path;
  std::string device_type = "CPU";
  int device_id = 0;
  std::optional<int> image_size;  // not given: the model card's input_size (416 without a card)
  std::optional<bool> letterbox;  // not given: the model card's letterbox (true without a card)
  std::string aipp_path;
  bool help = false;
};

// Parsed and checked flags; UserError on an unknown flag or a bad value.
Options ParseFlags(int argc, char** argv);

std::string Usage();

}  // namespace yolo
