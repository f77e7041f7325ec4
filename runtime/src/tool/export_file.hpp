#pragma once

// export and import: a store to and from newline-delimited JSON.
//
// One JSON object per line, in this order:
//   {"kind":"sourcery.export","format":1,"head":N}
//   {"kind":"event", position, stream, version, type, schema_version, event_id,
//    created_at (ISO), created_at_us, causation_id, correlation_id,
//    data, metadata (JSON, for people), data_msgpack, metadata_msgpack (base64,
//    the exact bytes)}                                  one per event, in order
//   {"kind":"deleted_stream", stream, version, created_at_us, updated_at_us}
//   {"kind":"snapshot", stream, stream_version, snapshot_version, type,
//    created_at_us, data_msgpack}
//   {"kind":"checkpoint", name, position}
//   {"kind":"read_model", name, position}   each read model's checkpoint (a
//                                           projection's, a process manager's)
//   {"kind":"read_model_row", name, table, key, value_base64}  its rows
//   {"kind":"end","events":N}                           so a cut file is caught
// The header says where the read models were ("read_models": "lmdb",
// "postgresql", or null). An import carries process managers' states and
// positions; it rebuilds the projections the tool has registered, copies
// the others between LMDB stores, and says which it could not carry
// (those start at the head, or with --handlers-from start from the origin).
// A string that is not valid UTF-8 goes as "<field>_base64" instead.
// Importing an export reproduces the store exactly: ids, positions, versions,

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

namespace sourcery::tool::export_file {

namespace fs = std::filesystem;
using json = nlohmann::json;
using line_json = nlohmann::ordered_json; // written lines keep "kind" first

constexpr int format = 1;

/// JSON text of a line; a payload string that is not UTF-8 shows U+FFFD
/// (its exact bytes are in the line's base64 field). Never throws.
template <class Json>
std::string render(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

} // namespace sourcery::tool::export_file
