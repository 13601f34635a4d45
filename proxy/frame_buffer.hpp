// A byte buffer for one relay direction: bytes are appended at the back by
// socket reads and consumed from the front once forwarded. It grows only
// to hold one whole message that must be inspected, and shrinks back when
// empty, so an idle session costs little memory.
#pragma once

#include <cstring>
#include <string_view>
#include <vector>

namespace pgshelf::proxy {

class FrameBuffer {
public:
    explicit FrameBuffer(std::size_t base_capacity) : base_capacity_(base_capacity) {}

    std::string_view data() const { return {storage_.data() + begin_, end_ - begin_}; }
    std::size_t size() const { return end_ - begin_; }

    // Free space at the back, at least `min_free` bytes (moving or growing).
    char* prepare(std::size_t min_free) {
        if (storage_.empty()) {
            storage_.resize(std::max(base_capacity_, min_free));
        }
        if (storage_.size() - end_ < min_free) {
            compact();
            if (storage_.size() - end_ < min_free) {
                storage_.resize(end_ + min_free);
            }
        }
        return storage_.data() + end_;
    }
    std::size_t free_space() const { return storage_.size() - end_; }
    void commit(std::size_t n) { end_ += n; }
    void consume(std::size_t n) {
        begin_ += n;
        if (begin_ == end_) {
            begin_ = end_ = 0;
            // Give back memory a large message needed.
            if (storage_.size() > base_capacity_) {
                std::vector<char>(base_capacity_).swap(storage_);
            }
        }
    }
    // Makes sure a frame of `frame_size` bytes starting at data() fits.
    void reserve_frame(std::size_t frame_size) {
        if (storage_.size() - begin_ < frame_size) {
            compact();
            if (storage_.size() < frame_size) {
                storage_.resize(frame_size);
            }
        }
    }

private:
    void compact() {
        if (begin_ > 0) {
            std::memmove(storage_.data(), storage_.data() + begin_, end_ - begin_);
            end_ -= begin_;
            begin_ = 0;
        }
    }

    std::size_t base_capacity_;
    std::vector<char> storage_;
    std::size_t begin_ = 0;
    std::size_t end_ = 0;
};

}  // namespace pgshelf::proxy
