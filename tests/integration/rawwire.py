"""A minimal PostgreSQL v3 wire-protocol client for tests that need exact bytes.

Drivers hide the message flow; these tests need to see it: which messages
arrive and in what order (PortalSuspended, skipped-until-Sync errors),
what a server answers to SSLRequest / GSSENCRequest, the SQLSTATE of an
ErrorResponse during startup, and a reader that controls its own pace.

Message formats: https://www.postgresql.org/docs/15/protocol-message-formats.html
Every frontend message is built by ``frame(type, body)``; ``Conn.recv()``
returns ``(type, body)`` pairs. Authentication supports trust, cleartext
password and md5 (enough for the harness roles that tests use here).
"""

from __future__ import annotations

import hashlib
import socket
import struct
from dataclasses import dataclass, field

PROTOCOL_3_0 = 196608
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102


def cstr(s: str | bytes) -> bytes:
    return (s.encode() if isinstance(s, str) else s) + b"\0"


def frame(kind: bytes, body: bytes = b"") -> bytes:
    """A typed frontend message: type byte, int32 length (including itself), body."""
    return kind + struct.pack("!I", len(body) + 4) + body


def untyped(body: bytes) -> bytes:
    """A startup-phase message without type byte."""
    return struct.pack("!I", len(body) + 4) + body


def startup_message(user: str, database: str, **params: str) -> bytes:
    pairs = {"user": user, "database": database, **params}
    return untyped(struct.pack("!I", PROTOCOL_3_0) + b"".join(cstr(k) + cstr(v) for k, v in pairs.items()) + b"\0")


def ssl_request() -> bytes:
    return untyped(struct.pack("!I", SSL_REQUEST_CODE))


def gssenc_request() -> bytes:
    return untyped(struct.pack("!I", GSSENC_REQUEST_CODE))


def cancel_request(pid: int, secret: int) -> bytes:
    return untyped(struct.pack("!IIi", CANCEL_REQUEST_CODE, pid, secret))


def query(sql: str) -> bytes:
    return frame(b"Q", cstr(sql))


def parse(sql: str, name: str = "", param_oids: tuple[int, ...] = ()) -> bytes:
    return frame(b"P", cstr(name) + cstr(sql) + struct.pack("!H", len(param_oids))
                 + b"".join(struct.pack("!I", oid) for oid in param_oids))


def bind(params: tuple[bytes | str | None, ...] = (), statement: str = "", portal: str = "",
         param_formats: tuple[int, ...] = (), result_formats: tuple[int, ...] = ()) -> bytes:
    body = cstr(portal) + cstr(statement)
    body += struct.pack("!H", len(param_formats)) + b"".join(struct.pack("!H", f) for f in param_formats)
    body += struct.pack("!H", len(params))
    for value in params:
        if value is None:
            body += struct.pack("!i", -1)
        else:
            data = value.encode() if isinstance(value, str) else value
            body += struct.pack("!i", len(data)) + data
    body += struct.pack("!H", len(result_formats)) + b"".join(struct.pack("!H", f) for f in result_formats)
    return frame(b"B", body)


def describe(kind: bytes, name: str = "") -> bytes:
    """kind: b'S' statement or b'P' portal."""
    return frame(b"D", kind + cstr(name))


def execute(portal: str = "", max_rows: int = 0) -> bytes:
    return frame(b"E", cstr(portal) + struct.pack("!I", max_rows))


def close(kind: bytes, name: str = "") -> bytes:
    return frame(b"C", kind + cstr(name))


def sync() -> bytes:
    return frame(b"S")


def flush() -> bytes:
    return frame(b"H")


def terminate() -> bytes:
    return frame(b"X")


def function_call(oid: int, args: tuple[bytes, ...], arg_format: int = 1, result_format: int = 1) -> bytes:
    body = struct.pack("!IHH", oid, 1, arg_format) + struct.pack("!H", len(args))
    body += b"".join(struct.pack("!i", len(a)) + a for a in args)
    return frame(b"F", body + struct.pack("!H", result_format))


def copy_data(data: bytes) -> bytes:
    return frame(b"d", data)


def copy_done() -> bytes:
    return frame(b"c")


# ---------------------------------------------------------------- decoding


def error_fields(body: bytes) -> dict[str, str]:
    """Fields of an ErrorResponse/NoticeResponse body keyed by field code (C, M, S, ...)."""
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[part[:1].decode()] = part[1:].decode("utf-8", "replace")
    return fields


def data_row(body: bytes) -> list[bytes | None]:
    (count,) = struct.unpack_from("!H", body)
    offset, values = 2, []
    for _ in range(count):
        (n,) = struct.unpack_from("!i", body, offset)
        offset += 4
        if n < 0:
            values.append(None)
        else:
            values.append(body[offset:offset + n])
            offset += n
    return values


class ServerError(Exception):
    """An ErrorResponse received where the client expected success."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__(f"{fields.get('C')}: {fields.get('M')}")
        self.fields = fields
        self.sqlstate = fields.get("C", "")


@dataclass
class Conn:
    """One connection; ``recv()`` returns (type, body) of the next backend message."""

    sock: socket.socket
    buffer: bytearray = field(default_factory=bytearray)
    parameters: dict[str, str] = field(default_factory=dict)
    backend_key: tuple[int, int] | None = None

    @classmethod
    def open(cls, host: str, port: int, timeout: float = 15) -> "Conn":
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock)

    @classmethod
    def connect(cls, host: str, port: int, user: str = "postgres", database: str = "postgres",
                password: str | None = None, timeout: float = 15, **params: str) -> "Conn":
        """Opens, starts up and authenticates; raises ServerError on an ErrorResponse."""
        conn = cls.open(host, port, timeout)
        conn.startup(user, database, password, **params)
        return conn

    def startup(self, user: str, database: str, password: str | None = None, **params: str) -> list:
        """Sends StartupMessage and runs authentication until ReadyForQuery."""
        self.send(startup_message(user, database, **params))
        messages = []
        while True:
            kind, body = self.recv()
            messages.append((kind, body))
            if kind == b"E":
                raise ServerError(error_fields(body))
            if kind == b"R":
                self._authenticate(body, user, password)
            elif kind == b"S":
                name, value, _ = body.split(b"\0")
                self.parameters[name.decode()] = value.decode()
            elif kind == b"K":
                self.backend_key = struct.unpack("!Ii", body)
            elif kind == b"Z":
                return messages

    def _authenticate(self, body: bytes, user: str, password: str | None) -> None:
        (code,) = struct.unpack_from("!I", body)
        if code == 0:
            return
        if password is None:
            raise RuntimeError(f"server asks for authentication {code} but no password given")
        if code == 3:
            self.send(frame(b"p", cstr(password)))
        elif code == 5:
            salt = body[4:8]
            inner = hashlib.md5(password.encode() + user.encode()).hexdigest().encode()
            self.send(frame(b"p", cstr(b"md5" + hashlib.md5(inner + salt).hexdigest().encode())))
        else:
            raise RuntimeError(f"authentication method {code} not supported by rawwire")

    def send(self, *messages: bytes) -> None:
        self.sock.sendall(b"".join(messages))

    def recv_exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buffer)))
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buffer += chunk
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    def recv_byte(self) -> bytes:
        """One unframed byte (the answer to SSLRequest / GSSENCRequest)."""
        return self.recv_exact(1)

    def recv(self) -> tuple[bytes, bytes]:
        header = self.recv_exact(5)
        (length,) = struct.unpack("!I", header[1:])
        return header[:1], self.recv_exact(length - 4)

    def recv_until_ready(self, limit: int = 100000) -> list[tuple[bytes, bytes]]:
        """Messages up to and including ReadyForQuery (bounded count)."""
        messages = []
        for _ in range(limit):
            kind, body = self.recv()
            messages.append((kind, body))
            if kind == b"Z":
                return messages
        raise RuntimeError(f"no ReadyForQuery within {limit} messages")

    def recv_n(self, count: int) -> list[tuple[bytes, bytes]]:
        return [self.recv() for _ in range(count)]

    def simple(self, sql: str) -> list[tuple[bytes, bytes]]:
        """Sends a simple Query and returns the messages up to ReadyForQuery."""
        self.send(query(sql))
        return self.recv_until_ready()

    def close(self) -> None:
        try:
            self.sock.sendall(terminate())
        except OSError:
            pass
        self.sock.close()

    def __enter__(self) -> "Conn":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def kinds(messages: list[tuple[bytes, bytes]]) -> str:
    """The message type letters of a sequence, e.g. '12DDsZ'."""
    return "".join(kind.decode() for kind, _ in messages)
