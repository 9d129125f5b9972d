#include "model_card.h"

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <opencv2/core.hpp>

#include "utils.h"

namespace yolo {
namespace {

constexpr int kMetadataField = 14;  // ONNX ModelProto.metadata_props, MindIR ModelProto.user_info
const char kCardKey[] = "model_card";

// A protobuf reader over a byte range: varints and length-delimited fields; `ok` turns false on anything else.
class Wire {
 public:
  Wire(const char* begin, const char* end) : at_(begin), end_(end) {}
  bool more() const { return ok && at_ < end_; }

  uint64_t Varint() {
    uint64_t value = 0;
    for (int shift = 0; shift < 64 && at_ < end_; shift += 7) {
      const uint8_t byte = static_cast<uint8_t>(*at_++);
      value |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return value;
    }
    ok = false;
    return 0;
  }

  // The content of a length-delimited field, consumed.
  std::string Bytes() {
    const uint64_t length = Varint();
    const char* start = at_;
    return Skip(length) ? std::string(start, static_cast<size_t>(length)) : std::string();
  }

  // Steps over `length` bytes; false (and not ok) when fewer are left.
  bool Skip(uint64_t length) {
    if (length > static_cast<uint64_t>(end_ - at_)) {
      ok = false;
      return false;
    }
    at_ += length;
    return true;
  }

  void SkipField(int wire_type) {
    switch (wire_type) {
      case 0: Varint(); break;
      case 1: Skip(8); break;
      case 2: Skip(Varint()); break;
      case 5: Skip(4); break;
      default: ok = false;
    }
  }

  bool ok = true;

 private:
  const char* at_;
  const char* end_;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

}  // namespace

std::string MetadataEntry(const std::string& bytes, const std::string& key) {
  Wire message(bytes.data(), bytes.data() + bytes.size());
  while (message.more()) {
    const uint64_t tag = message.Varint();
    const int field = static_cast<int>(tag >> 3), wire_type = static_cast<int>(tag & 7);
    if (field != kMetadataField || wire_type != 2) {
      message.SkipField(wire_type);
      continue;
    }
    const std::string entry_bytes = message.Bytes();
    Wire entry(entry_bytes.data(), entry_bytes.data() + entry_bytes.size());
    std::string entry_key, value;
    while (entry.more()) {
      const uint64_t entry_tag = entry.Varint();
      if ((entry_tag & 7) != 2) {
        entry.SkipField(static_cast<int>(entry_tag & 7));
      } else if ((entry_tag >> 3) == 1) {
        entry_key = entry.Bytes();
      } else if ((entry_tag >> 3) == 2) {
        value = entry.Bytes();
      } else {
        entry.SkipField(2);
      }
    }
    if (entry.ok && message.ok && entry_key == key) return value;
  }
  return "";
}

ModelCard ParseModelCard(const std::string& json, const std::string& source) {
  ModelCard card;
  card.found = true;
  card.source = source;
  card.json = json;
  const std::string invalid = "the model card of " + source + " is not valid";
  try {
    cv::FileStorage fs(json, cv::FileStorage::READ | cv::FileStorage::MEMORY | cv::FileStorage::FORMAT_JSON);
    const cv::FileNode size = fs["input_size"], letterbox = fs["letterbox"], classes = fs["num_classes"];
    const cv::FileNode names = fs["names"], ids = fs["category_ids"];
    if (!size.isInt() || !letterbox.isInt() || !classes.isInt() || !names.isSeq() || !ids.isSeq()) {
      throw UserError(invalid + " (input_size, letterbox, num_classes, names or category_ids missing)");
    }
    card.input_size = static_cast<int>(size);
    card.letterbox = static_cast<int>(letterbox) != 0;
    card.num_classes = static_cast<int>(classes);
    for (const cv::FileNode& name : names) card.names.push_back(static_cast<std::string>(name));
    for (const cv::FileNode& id : ids) card.category_ids.push_back(static_cast<int>(id));
  } catch (const cv::Exception&) {
    throw UserError(invalid + " JSON");
  }
  if (card.input_size <= 0 || card.input_size % 32 != 0 || card.num_classes < 1 ||
      static_cast<int>(card.names.size()) != card.num_classes ||
      static_cast<int>(card.category_ids.size()) != card.num_classes) {
    throw UserError(invalid + " (input_size " + std::to_string(card.input_size) + ", num_classes " +
                    std::to_string(card.num_classes) + ", " + std::to_string(card.names.size()) + " names, " +
                    std::to_string(card.category_ids.size()) + " category_ids)");
  }
  return card;
}

ModelCard ReadModelCard(const std::string& model_path) {
  const std::string sidecar = model_path + ".json";
  if (std::filesystem::is_regular_file(sidecar)) return ParseModelCard(ReadFile(sidecar), sidecar);
  const std::string json = MetadataEntry(ReadFile(model_path), kCardKey);
  if (json.empty()) return ModelCard{};
  return ParseModelCard(json, model_path);
}

}  // namespace yolo
