#pragma once

// Declarations of the runtime's types, for headers that only name them --
// a domain header declaring `sourcery::router routes();`, a module passing
// an `application&` along: no actor stack pulled in.

#include "sourcery/actors/fwd.hpp"

namespace sourcery {

class application;
class dispatcher;
class logger;
class metrics;
class middleware;
class registration;
class registration_provider;
class router;
struct application_config;
struct dispatch_context;
struct dispatch_options;
struct registration_context;
struct registration_description;

namespace cluster {
struct cluster_settings;
}

} // namespace sourcery
