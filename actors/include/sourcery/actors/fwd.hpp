#pragma once

// Declarations of the actors library's types, for headers that only name
// them: no CAF, no msgpack pulled in. (A domain header of commands, events
// and aggregates includes aggregates/domain.hpp.)

namespace sourcery {

template <class Event>
class outcome;
class handler_status;
class stream_prefixes;
struct aggregate_settings;
struct command_envelope;
struct dispatch_result;
struct error_policy;
struct handler_options;
struct lifespan;
struct rejection;

} // namespace sourcery
