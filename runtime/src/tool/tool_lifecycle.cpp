// A store's life: init creates one explicitly (nothing else the tool does
// creates anything), drop removes one, delete soft-deletes a stream.

#include <cstdio>
#include <filesystem>

#include "sourcery/config.hpp"
#if SOURCERY_WITH_POSTGRES
#include "sourcery/persistence/postgres_store.hpp"
#endif
#include "sourcery/persistence/event_registry.hpp"
#include "sourcery/persistence/personal.hpp"
#include "tool_context.hpp"
#include "tool_output.hpp"

namespace sourcery::tool {

namespace {

namespace fs = std::filesystem;

/// The store opened for writing, as an application would (upgraded when
/// older; no_store when missing); null after saying why.
std::unique_ptr<persistence::event_store> open_writable(const context& ctx) {
  auto store = persistence::open_store(ctx.uri());
  if (!store) {
    store_failure(ctx, "cannot open " + ctx.where(), store.error());
    return nullptr;
  }
  return std::move(*store);
}

} // namespace

int run_init(const context& ctx) {
  auto made = persistence::init_store(ctx.uri());
  if (!made)
    return store_failure(ctx, "cannot open " + ctx.where(), made.error());
  const bool existed = !made->created;
  const auto head = made->head_position;
  // PostgreSQL's read models came with the store; LMDB's are a directory
  // of their own (--read-models).
  if (!ctx.uri().is_postgres())
    if (auto models = ctx.open_read_models(false); !models)
      return store_failure(ctx, "cannot create the read models of " + ctx.where(), models.error());
  if (ctx.opts.json)
    std::printf("%s\n", nlohmann::json{{"store", ctx.where()}, {"created", !existed}, {"head_position", head}}
                          .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                          .c_str());
  else if (existed)
    std::printf("%s already holds a Sourcery store (%s events); checked, nothing changed\n", ctx.where().c_str(),
                grouped(head).c_str());
  else
    std::printf("created a Sourcery store in %s\n", ctx.where().c_str());
  return 0;
}

int run_drop(const context& ctx) {
  if (!ctx.opts.yes)
    return std::fprintf(stderr, "%s: drop removes every event of %s and its read models for good; add --yes to do it\n",
                        ctx.program.c_str(), ctx.where().c_str()),
           2;
  auto uri = ctx.uri();
#if SOURCERY_WITH_POSTGRES
  if (uri.is_postgres()) {
    // Only a Sourcery store, and only while no application uses it.
    persistence::store_open_options look;
    look.read_only = true;
    auto there = persistence::open_store(uri, look);
    if (!there) {
      if (persistence::code_of(there.error()) == persistence::store_errc::no_store)
        no_store(ctx, there.error());
      return store_failure(ctx, "drop", there.error());
    }
    there->reset(); // its own sessions are not an application's
    if (auto users = persistence::postgres_store::sessions_on(uri.location, uri.schema); !users)
      return store_failure(ctx, "drop", users.error());
    else if (*users > 0)
      return store_failure(ctx, "drop",
                           persistence::make_error(persistence::store_errc::store_in_use,
                                                   std::to_string(*users) + " sessions of running applications use "
                                                     + ctx.where() + "; stop them first"));
    if (auto err = persistence::postgres_store::drop_schema(uri.location, uri.schema))
      return store_failure(ctx, "drop", err);
  } else
#endif
  {
    fs::path dir{ctx.opts.data_dir};
    {
      // Opening it for writing claims it: refused while an application
      // runs on it (store_in_use), and proves it is a Sourcery store.
      auto store = open_writable(ctx);
      if (!store)
        return 1;
    }
    std::error_code ec;
    for (auto* name : {"data.mdb", "lock.mdb"})
      fs::remove(dir / name, ec);
    fs::remove_all(dir / "read-models", ec);
    if (fs::is_empty(dir, ec))
      fs::remove(dir, ec);
    if (ec)
      return failure(ctx, "drop: " + ec.message());
  }
  std::printf("dropped the Sourcery store in %s\n", ctx.where().c_str());
  return 0;
}

int run_delete(const context& ctx) {
  const auto& stream = ctx.opts.args.at(0);
  auto store = open_writable(ctx);
  if (!store)
    return 1;
  auto info = store->stream_info(stream);
  if (!info)
    return store_failure(ctx, "delete " + stream, info.error());
  if (!info->exists)
    return failure(ctx, "delete: no stream " + stream + " (`streams` lists them)");
  auto expected = ctx.opts.expected_version ? persistence::expected_version::exact(*ctx.opts.expected_version)
                                            : persistence::expected_version::any();
  if (auto r = store->delete_stream(stream, expected); !r)
    return store_failure(ctx, "delete " + stream, r.error());
  std::printf("deleted stream %s at version %llu (its events stay in $all; the stream takes no more)\n",
              stream.c_str(), static_cast<unsigned long long>(info->version));
  return 0;
}

int run_forget(const context& ctx) {
  const auto& subject = ctx.opts.args.at(0);
  if (subject.empty() || subject.size() > 400)
    return failure(ctx, "forget: a subject is 1 to 400 bytes");
  auto store = open_writable(ctx);
  if (!store)
    return 1;
  // As application::forget: the consumers are told first, then the key goes.
  persistence::event_registry types;
  if (auto err = types.add<subject_forgotten>(subject_forgotten::type_name))
    return store_failure(ctx, "forget " + subject, err);
  auto announcement = types.encode(subject_forgotten{subject});
  if (!announcement)
    return store_failure(ctx, "forget " + subject, announcement.error());
  if (auto r = store->append(forgotten_subjects_stream, persistence::expected_version::any(), {*announcement}); !r)
    return store_failure(ctx, "forget " + subject, r.error());
  auto forgot = store->forget(subject);
  if (!forgot)
    return store_failure(ctx, "forget " + subject, forgot.error());
  if (*forgot)
    std::printf("forgot %s: its key is deleted, and its personal fields read as forgotten from now on\n",
                subject.c_str());
  else
    std::printf("%s has no key (forgotten before, or it never had personal data): nothing more to forget\n",
                subject.c_str());
  return 0;
}

} // namespace sourcery::tool
