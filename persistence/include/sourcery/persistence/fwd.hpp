#pragma once

// Declarations of the persistence layer's types, for headers that only name
// them (a pointer, a reference, a return type): no definitions pulled in.

#include <cstdint>

namespace sourcery::persistence {

class append_fence;
class event_registry;
class event_store;
class expected_version;
class metadata;
class projection_store;
class store_maintenance;
struct append_result;
struct event_data;
struct fence_lease;
struct projection_store_options;
struct recorded_event;
struct snapshot;
struct store_open_options;
struct store_uri;
struct stream_info;
struct uuid;
enum class durability : std::uint8_t;

} // namespace sourcery::persistence
