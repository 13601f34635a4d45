// Replaces the global operator new/delete of the test binary to feed AllocProbe.
#include "alloc_probe.hpp"

#include <atomic>
#include <cstdlib>
#include <new>

namespace pgshelf::pgwire::test {
namespace {

std::atomic<bool> active{false};
std::atomic<std::size_t> largest_size{0};

void record(std::size_t size) {
    if (!active.load(std::memory_order_relaxed)) {
        return;
    }
    std::size_t seen = largest_size.load(std::memory_order_relaxed);
    while (size > seen && !largest_size.compare_exchange_weak(seen, size, std::memory_order_relaxed)) {
    }
}

}  // namespace

AllocProbe::AllocProbe() {
    largest_size = 0;
    active = true;
}

AllocProbe::~AllocProbe() { active = false; }

std::size_t AllocProbe::largest() const { return largest_size.load(); }

}  // namespace pgshelf::pgwire::test

void* operator new(std::size_t size) {
    pgshelf::pgwire::test::record(size);
    if (void* p = std::malloc(size == 0 ? 1 : size)) {
        return p;
    }
    throw std::bad_alloc();
}

void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
