// Records the largest single heap allocation made while a probe is alive, so
// tests can prove a decoder never sized a container from an unchecked count.
#pragma once

#include <cstddef>

namespace pgshelf::pgwire::test {

class AllocProbe {
public:
    AllocProbe();
    ~AllocProbe();
    AllocProbe(const AllocProbe&) = delete;
    AllocProbe& operator=(const AllocProbe&) = delete;

    std::size_t largest() const;
};

}  // namespace pgshelf::pgwire::test
