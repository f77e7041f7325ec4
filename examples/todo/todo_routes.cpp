#include "sourcery/runtime/commands/router.hpp"
#include "todo.hpp"

namespace todo {

sourcery::router routes() {
  sourcery::router r;
  r.aggregate<todo>([](const auto& c) { return c.id; }, "todo-").dispatch<create_todo, update_todo, delete_todo>();
  return r;
}

} // namespace todo
