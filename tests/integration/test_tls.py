"""TLS on both sides of pgshelf, and the startup negotiation requests.

Client side (pgshelf with PGSHELF_TLS_CERT_FILE/KEY): psql with
sslmode=verify-full and the test CA connects and reports TLS, also by the
name localhost; sslmode=disable still works; a client trusting another CA
refuses pgshelf's certificate. Without a certificate pgshelf answers
SSLRequest with 'N' and the startup continues on the same socket, as
PostgreSQL without ssl does. GSSENCRequest is answered 'N' (then the
startup continues), and libpq's gssencmode=prefer works.

Server side (PostgreSQL with ssl=on and only hostssl lines): pgshelf with
upstream sslmode=require and verify-full works and PostgreSQL sees TLS
(pg_stat_ssl); sslmode=disable fails and the server's error reaches the
client; verify-full against the wrong CA fails with a class 08 error and
pgshelf keeps running. A plain server works with sslmode=prefer and fails
with sslmode=require. SCRAM over TLS on both sides works with
channel_binding=disable, and channel binding is not offered to clients.
"""

from __future__ import annotations

import pytest

import rawwire
from clients import connect_error, fetch_one, psql, startup_error
from pgshelf_harness import PASSWORDS, PgShelf, Postgres, make_tls_files


@pytest.fixture(scope="module")
def client_tls(tmp_path_factory):
    """Certificate pgshelf presents to clients (its own CA)."""
    return make_tls_files(tmp_path_factory.mktemp("client-tls"), readable_by_postgres=False)


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory):
    """A CA that signed neither pgshelf's nor PostgreSQL's certificate."""
    return make_tls_files(tmp_path_factory.mktemp("other-ca"), readable_by_postgres=False).ca_cert


@pytest.fixture(scope="module")
def tls_shelf(pg, pgshelf_bin, client_tls):
    with PgShelf(pg, binary=pgshelf_bin, tls_cert=client_tls.server_cert, tls_key=client_tls.server_key) as shelf:
        yield shelf


@pytest.fixture(scope="module")
def tls_pg():
    """PostgreSQL that accepts TCP connections over TLS only."""
    with Postgres(tls=True, hostssl_only=True) as server:
        yield server


SERVER_SSL = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"

# ----------------------------------------------------------------- client side


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_client_tls_verify_full(tls_shelf, client_tls, host):
    dsn = tls_shelf.dsn(sslmode="verify-full", sslrootcert=client_tls.ca_cert).replace("127.0.0.1", host)
    result = psql(dsn, "-c", "\\conninfo")
    assert result.returncode == 0, result.stderr
    assert "SSL connection (protocol: TLSv1." in result.stdout
    result = psql(dsn, "-A", "-t", "-c", "SELECT 1")
    assert (result.returncode, result.stdout) == (0, "1\n"), result.stderr


def test_client_tls_disable_still_works(tls_shelf):
    result = psql(tls_shelf.dsn(sslmode="disable"), "-c", "\\conninfo")
    assert result.returncode == 0 and "SSL connection" not in result.stdout, result
    assert fetch_one(tls_shelf.dsn(sslmode="disable"), "SELECT 'plain'") == ("plain",)


def test_client_rejects_certificate_from_another_ca(tls_shelf, other_ca):
    message = connect_error(tls_shelf.dsn(sslmode="verify-full", sslrootcert=other_ca))
    assert "certificate verify failed" in message
    assert tls_shelf.alive()


def test_ssl_request_without_certificate(target):
    # pgshelf without a certificate, like PostgreSQL with ssl=off: 'N', then a plain startup.
    with rawwire.Conn.open(target.host, target.port) as conn:
        conn.send(rawwire.ssl_request())
        assert conn.recv_byte() == b"N"
        conn.startup("postgres", "postgres")
        assert rawwire.kinds(conn.simple("SELECT 1")) == "TDCZ"


def test_ssl_request_with_certificate(tls_shelf):
    with rawwire.Conn.open(tls_shelf.host, tls_shelf.port) as conn:
        conn.send(rawwire.ssl_request())
        assert conn.recv_byte() == b"S"


def test_gssenc_request_answered_no(shelf):
    # PostgreSQL built with GSSAPI answers 'G' here; pgshelf has no GSSAPI and must say 'N'.
    with rawwire.Conn.open(shelf.host, shelf.port) as conn:
        conn.send(rawwire.gssenc_request())
        assert conn.recv_byte() == b"N"
        conn.send(rawwire.ssl_request())
        assert conn.recv_byte() == b"N"
        conn.startup("postgres", "postgres")
        assert rawwire.kinds(conn.simple("SELECT 1")) == "TDCZ"


def test_gssencmode_prefer(target):
    result = psql(target.dsn(gssencmode="prefer"), "-A", "-t", "-c", "SELECT 'gss prefer'")
    assert (result.returncode, result.stdout) == (0, "gss prefer\n"), result.stderr

# ----------------------------------------------------------------- server side


@pytest.mark.parametrize("mode", ["require", "verify-full"])
def test_upstream_tls(make_shelf, tls_pg, mode):
    params = {"sslmode": mode}
    if mode == "verify-full":
        params["sslrootcert"] = tls_pg.tls.ca_cert
    shelf = make_shelf(tls_pg, upstream_params=params)
    assert fetch_one(shelf.dsn(), SERVER_SSL) == (True,)
    assert fetch_one(shelf.dsn(user="md5_user", password=PASSWORDS["md5_user"]), "SELECT current_user") == (
        "md5_user",)


def test_upstream_tls_disable_gets_servers_error(make_shelf, tls_pg):
    shelf = make_shelf(tls_pg, upstream_params={"sslmode": "disable"})
    error = startup_error(shelf)
    assert error.sqlstate == "28000", error.fields
    assert "no encryption" in error.fields["M"]
    assert "no encryption" in connect_error(shelf.dsn())
    assert shelf.alive()


def test_upstream_verify_full_wrong_ca(make_shelf, tls_pg, other_ca):
    shelf = make_shelf(tls_pg, upstream_params={"sslmode": "verify-full", "sslrootcert": other_ca})
    error = startup_error(shelf)
    assert error.sqlstate.startswith("08"), error.fields
    assert shelf.alive()


def test_plain_upstream(make_shelf, pg):
    shelf = make_shelf(pg, upstream_params={"sslmode": "prefer"})
    assert fetch_one(shelf.dsn(), SERVER_SSL) == (False,)
    shelf = make_shelf(pg, upstream_params={"sslmode": "require"})
    error = startup_error(shelf)
    assert error.sqlstate.startswith("08"), error.fields
    assert shelf.alive()


def test_scram_over_tls_on_both_sides(make_shelf, tls_pg, client_tls):
    shelf = make_shelf(tls_pg, upstream_params={"sslmode": "require"}, tls_cert=client_tls.server_cert,
                       tls_key=client_tls.server_key)
    dsn = shelf.dsn(user="scram_user", password=PASSWORDS["scram_user"], sslmode="verify-full",
                    sslrootcert=client_tls.ca_cert, channel_binding="disable")
    assert fetch_one(dsn, f"SELECT current_user, ({SERVER_SSL})") == ("scram_user", True)
    # pgshelf does not offer SCRAM-SHA-256-PLUS: a client that insists on it gives up.
    message = connect_error(dsn.replace("channel_binding=disable", "channel_binding=require"))
    assert "channel binding" in message
