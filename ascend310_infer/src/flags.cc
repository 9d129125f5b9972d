#include "flags.h"

#include <filesystem>
#include <functional>
#include <map>

#include "utils.h"

namespace yolo {
namespace {

int ParseInt(const std::string& name, const std::string& value) {
  size_t used = 0;
  int number = 0;
  try {
    number = std::stoi(value, &used);
  } catch (const std::logic_error&) {
    used = 0;
  }
  if (used == 0 || used != value.size()) throw UserError("--" + name + " expects an integer, got '" + value + "'");
  return number;
}

bool ParseBool(const std::string& name, const std::string& value) {
  if (value == "true" || value == "True" || value == "1") return true;
  if (value == "false" || value == "False" || value == "0") return false;
  throw UserError("--" + name + " expects true or false, got '" + value + "'");
}

using Setter = std::function<void(Options&, const std::string&)>;

const std::map<std::string, Setter>& Setters() {
  static const std::map<std::string, Setter> setters = {
      {"model_path", [](Options& o, const std::string& v) { o.model_path = v; }},
      {"dataset_path", [](Options& o, const std::string& v) { o.dataset_path = v; }},
      {"device_type", [](Options& o, const std::string& v) { o.device_type = v; }},
      {"device_id", [](Options& o, const std::string& v) { o.device_id = ParseInt("device_id", v); }},
      {"image_size", [](Options& o, const std::string& v) { o.image_size = ParseInt("image_size", v); }},
      {"letterbox", [](Options& o, const std::string& v) { o.letterbox = ParseBool("letterbox", v); }},
      {"aipp_path", [](Options& o, const std::string& v) { o.aipp_path = v; }},
  };
  return setters;
}

void Check(const Options& o) {
  if (o.model_path.empty()) throw UserError("missing --model_path");
  if (o.dataset_path.empty()) throw UserError("missing --dataset_path");
  if (!std::filesystem::is_regular_file(o.model_path)) throw UserError("model file not found: " + o.model_path);
  if (o.device_type != "CPU" && o.device_type != "Ascend") {
    throw UserError("--device_type must be CPU or Ascend, got '" + o.device_type + "'");
  }
  if (o.device_id < 0) throw UserError("--device_id must be >= 0, got " + std::to_string(o.device_id));
  if (o.image_size && (*o.image_size <= 0 || *o.image_size % 32 != 0)) {
    throw UserError("--image_size must be a positive multiple of 32, got " + std::to_string(*o.image_size));
  }
  if (!o.aipp_path.empty() && !std::filesystem::is_regular_file(o.aipp_path)) {
    throw UserError("AIPP config not found: " + o.aipp_path);
  }
}

}  // namespace

Options ParseFlags(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      options.help = true;
      return options;
    }
    if (arg.rfind("--", 0) != 0) throw UserError("unexpected argument '" + arg + "' (flags are --name=value)");
    const size_t eq = arg.find('=');
    const std::string name = arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    const auto setter = Setters().find(name);
    if (setter == Setters().end()) throw UserError("unknown flag --" + name + " (see --help)");
    if (eq == std::string::npos && i + 1 >= argc) throw UserError("--" + name + " needs a value");
    setter->second(options, eq == std::string::npos ? argv[++i] : arg.substr(eq + 1));
  }
  Check(options);
  return options;
}

std::string Usage() {
  return "usage: main --model_path=MODEL --dataset_path=IMAGE_DIR [--device_type=CPU|Ascend] [--device_id=0]\n"
         "            [--image_size=SIZE] [--letterbox=true|false] [--aipp_path=aipp.cfg]\n"
         "  MODEL: the exported ONNX lowered by onnx_for_opencv.py (CPU) or the MINDIR (Ascend)\n"
         "  --image_size, --letterbox: from the model card export.py writes into MODEL (or MODEL.json beside it);\n"
         "    for a model without one, 416 and true; a value that contradicts the card is an error\n"
         "  --device_id: the Ascend device; --aipp_path (Ascend): feed RGB uint8 and let AIPP normalise\n"
         "  writes result_Files/IMAGE_NAME.txt (label score x y w h per line), result_Files/model_card.json (the\n"
         "  card, for postprocess.py's class map) and\n"
         "  time_Result/test_perform_static.txt in the working directory\n";
}

}  // namespace yolo
