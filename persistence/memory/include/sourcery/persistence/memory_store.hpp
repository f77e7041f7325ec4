#pragma once

#include <memory>

#include "sourcery/persistence/event_store.hpp"

namespace sourcery::persistence {

/// An event store held in memory: same contract as `lmdb_store`, nothing
/// survives the object. For tests and for benchmarks of the layers above.
class memory_store final : public event_store {
public:
  memory_store();
  ~memory_store() override;

  uint64_t head_position() const override;

protected:
  void do_append(std::string stream, expected_version expected, std::vector<event_data> events,
                 append_callback done) override;
  caf::expected<void> do_delete_stream(std::string_view stream, expected_version expected) override;
  caf::error do_read_stream(std::string_view stream, uint64_t from, size_t max_count, read_direction direction,
                            std::vector<recorded_event>& out) const override;
  caf::error do_read_all(uint64_t from, size_t max_count, read_direction direction,
                         std::vector<recorded_event>& out) const override;
  caf::expected<persistence::stream_info> do_stream_info(std::string_view stream) const override;
  caf::expected<void> do_save_snapshot(snapshot snap) override;
  caf::expected<std::optional<snapshot>> do_load_snapshot(std::string_view stream) const override;
  caf::expected<void> do_delete_snapshot(std::string_view stream) override;
  caf::expected<void> do_save_checkpoint(std::string_view name, uint64_t position) override;
  caf::expected<std::optional<uint64_t>> do_load_checkpoint(std::string_view name) const override;
  caf::error do_list_streams(std::string_view after, size_t max_count,
                             std::vector<persistence::stream_info>& out) const override;
  caf::error do_list_snapshots(std::string_view after, size_t max_count, std::vector<snapshot>& out) const override;
  caf::expected<std::vector<std::pair<std::string, uint64_t>>> do_list_checkpoints() const override;
  bool keeps_personal_data() const noexcept override { return true; }
  caf::error do_load_key_records(const std::vector<std::string>& subjects,
                                 std::vector<std::pair<std::string, bytes>>& found) const override;
  caf::expected<bool> do_forget(std::string_view subject) override;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace sourcery::persistence
