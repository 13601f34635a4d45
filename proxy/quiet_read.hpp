// A socket read that lets Asio's reactor skip its first try of the next
// read when this one emptied the socket.
//
// Asio starts every read with a recv() before waiting for readiness, and on
// a relay that recv() nearly always returns EAGAIN: the peer has not
// answered yet. Asio's epoll reactor already skips that first try after a
// read it was told left the socket empty ("exhausted"), until the next
// readiness event, which edge-triggered epoll delivers for any byte that
// arrives later. Its own read op says "exhausted" only at end of stream;
// this one also says so when a read comes up short, which on a stream
// socket means the receive queue was empty.
//
// One case is not covered by a readiness edge: an end of stream (FIN)
// that was already queued behind the data of the short read. Its edge was
// spent on that data, so a read started without a first try would wait
// for an event that never comes. Stream::read_some therefore tries the
// read first itself unless the caller says the bytes so far end where the
// peer waits for an answer (see Stream::PeerTurn).
#pragma once

#include <boost/asio/detail/reactive_socket_recv_op.hpp>

#include "proxy/asio.hpp"

namespace pgshelf::proxy {

// One receive buffer, passed to async_receive in place of a mutable_buffer
// to get the read op below. `emptied` is set when the read came up short.
struct ShortReadEmpties {
    using value_type = asio::mutable_buffer;
    using const_iterator = const asio::mutable_buffer*;
    const_iterator begin() const { return &buffer; }
    const_iterator end() const { return &buffer + 1; }

    asio::mutable_buffer buffer;
    bool* emptied;
};

}  // namespace pgshelf::proxy

namespace boost::asio::detail {

// Asio's reactive_socket_recv_op_base, for ShortReadEmpties: the same recv,
// reporting done_and_exhausted for a short read as well as at end of stream.
template <>
class reactive_socket_recv_op_base<pgshelf::proxy::ShortReadEmpties> : public reactor_op {
public:
    reactive_socket_recv_op_base(const boost::system::error_code& success_ec, socket_type socket,
                                 socket_ops::state_type state, const pgshelf::proxy::ShortReadEmpties& buffers,
                                 socket_base::message_flags flags, func_type complete_func)
        : reactor_op(success_ec, &reactive_socket_recv_op_base::do_perform, complete_func),
          socket_(socket),
          state_(state),
          buffers_(buffers),
          flags_(flags) {}

    static status do_perform(reactor_op* base) {
        auto* o = static_cast<reactive_socket_recv_op_base*>(base);
        const bool stream = (o->state_ & socket_ops::stream_oriented) != 0;
        if (!socket_ops::non_blocking_recv1(o->socket_, o->buffers_.buffer.data(), o->buffers_.buffer.size(),
                                            o->flags_, stream, o->ec_, o->bytes_transferred_)) {
            return not_done;
        }
        const bool emptied = stream && !o->ec_ && o->bytes_transferred_ < o->buffers_.buffer.size();
        *o->buffers_.emptied = emptied;
        return emptied || (stream && o->bytes_transferred_ == 0) ? done_and_exhausted : done;
    }

private:
    socket_type socket_;
    socket_ops::state_type state_;
    pgshelf::proxy::ShortReadEmpties buffers_;
    socket_base::message_flags flags_;
};

}  // namespace boost::asio::detail
