#pragma once

// Declarations of the supervision library's types, for headers that only
// name them: no CAF pulled in.

namespace sourcery::supervision {

class supervisor;
struct backoff_policy;
struct child_counts;
struct child_info;
struct child_spec;
struct shutdown_policy;
struct supervisor_flags;
struct supervisor_report;

} // namespace sourcery::supervision
