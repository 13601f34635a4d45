// Prometheus text exposition of pgshelf's counters (prometheus-cpp's
// metric types and text serializer).
#pragma once

#include <string>

namespace pgshelf::proxy {

class Runtime;

std::string render_metrics(const Runtime& runtime);

}  // namespace pgshelf::proxy
