// The translation unit that builds Sourcery's precompiled headers
// (cmake/PrecompiledHeaders.cmake); it compiles nothing of its own.
