// The one Catch2 main shared by every test executable. Library logging goes to stderr at warning
// level (the default sink), so test output stays readable.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
