// Command-line flags of the inference app: --name=value or --name value.
#pragma once

#include <string>

namespace yolo {

struct Options {
  std::string model_path;
  std::string dataset_path;
  std::string device_type = "CPU";
  int device_id = 0;
  int image_size = 416;
  bool letterbox = true;
  std::string aipp_path;
  bool help = false;
};

// Parsed and checked flags; UserError on an unknown flag or a bad value.
Options ParseFlags(int argc, char** argv);

std::string Usage();

}  // namespace yolo
