// Forgetting a subject (personal.hpp): the announcement to the consumers,
// then the key's deletion.

#include "sourcery/persistence/personal.hpp"
#include "sourcery/runtime/application.hpp"

namespace sourcery {

caf::expected<bool> application::forget(const std::string& subject) {
  if (subject.empty() || subject.size() > 400)
    return persistence::make_error(persistence::store_errc::invalid_argument, "a subject is 1 to 400 bytes");
  // Announced first: were the process to die between the two, the key
  // would remain and a second call finish the job; the other order could
  // leave read models holding what no one would ever tell them to erase.
  auto announcement = types_.encode(subject_forgotten{subject});
  if (!announcement)
    return announcement.error();
  auto appended = store_->append(forgotten_subjects_stream, persistence::expected_version::any(), {*announcement});
  if (!appended)
    return appended.error();
  return store_->forget(subject);
}

} // namespace sourcery
