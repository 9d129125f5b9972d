// The model card an export carries (src/formats/model_card.py): one JSON object under the key "model_card" in an
// ONNX file's metadata_props or a MINDIR's user_info (both field 14 of the file's top-level protobuf message, as
// key/value entries), or in FILE.json beside the model (an AIR file's sidecar).
#pragma once

#include <string>
#include <vector>

namespace yolo {

struct ModelCard {
  bool found = false;
  std::string source;  // where it was read: the model file or its sidecar
  std::string json;    // the card as stored
  int input_size = 0;
  bool letterbox = true;
  int num_classes = 0;
  std::vector<std::string> names;
  std::vector<int> category_ids;
};

// The card of the model at `model_path`: its sidecar (MODEL.json) if there is one, else the "model_card" entry of
// its metadata; found == false when it has neither (an export from before the card). UserError when a card is
// there but not valid.
ModelCard ReadModelCard(const std::string& model_path);

// The value of `key` among the string-to-string entries in field 14 of a serialized protobuf message (ONNX
// ModelProto.metadata_props, MindIR ModelProto.user_info); empty when absent or when `bytes` is not protobuf.
std::string MetadataEntry(const std::string& bytes, const std::string& key);

// The card's fields from its JSON text; UserError naming `source` when a field is missing or not valid.
ModelCard ParseModelCard(const std::string& json, const std::string& source);

}  // namespace yolo
