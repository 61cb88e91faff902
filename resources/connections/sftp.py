"""An SFTP server as a file connection (paramiko; host keys checked against known_hosts).

Transfers are pipelined here rather than with paramiko's `put`/`get`, on an SFTP channel of
their own opened through paramiko's public Transport API (`_Session`: paramiko's pipelining
hooks are private). Measured with
`benchmarks/sftp_delivery.py` (1 GiB to OpenSSH's sshd on loopback, 2 cores): `put` reached
0.4-0.56x OpenSSH's own `sftp`, and `get` with prefetch crawled at ~5 MiB/s while holding the
whole file in memory (its prefetch buffers grow whenever the disk is slower than the network,
and each read scans them all). What pays, largest first: requests as large as the server
accepts (eight times fewer replies for Python to parse), AES-GCM before paramiko's default
AES-CTR + HMAC (one pass over the data instead of two), a steady number of requests in flight
instead of paramiko's drain-everything every 100 writes, requests that fill whole SSH packets,
and on download an 8 MiB channel window taken whole by each read. Memory stays flat: one
request's buffer on upload; on download the window a few times over (paramiko's channel buffer,
its copy handed over, the piece being written: 40 MiB added for 1 GiB, measured). Not kept,
because they did not measurably help: larger windows or packets for uploads (the server's
2 MiB window and 32 KiB packets rule that direction), higher rekey limits (two rekeys per GiB
at ~50 ms), and parallel SFTP channels writing disjoint ranges (on 2 cores the client,
Python-bound, and sshd already share them).
"""

import base64
import binascii
import errno
import os
import posixpath
import re
import stat
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, ClassVar, Protocol

import dagster as dg
import paramiko
from paramiko.hostkeys import HostKeyEntry, InvalidHostKey
from paramiko.sftp import (
    CMD_CLOSE,
    CMD_DATA,
    CMD_EXTENDED,
    CMD_EXTENDED_REPLY,
    CMD_HANDLE,
    CMD_INIT,
    CMD_OPEN,
    CMD_READ,
    CMD_STATUS,
    CMD_VERSION,
    CMD_WRITE,
    SFTP_EOF,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_READ,
    SFTP_FLAG_TRUNC,
    SFTP_FLAG_WRITE,
    SFTP_NO_SUCH_FILE,
    SFTP_OK,
    SFTP_PERMISSION_DENIED,
)
from paramiko.ssh_exception import IncompatiblePeer, NoValidConnectionsError

from resources.connections.files import (
    RemoteFile,
    TransferError,
    check_size,
    joined,
    matches,
    partial_beside,
    safe_relative,
    split_pattern,
)
from resources.connections.retry import RetryingConnection, causes, socket_transient
from resources.connections.ssh_connection import SshConnection
from resources.progress import tracked

# paramiko's messages for a connection that was cut or never finished opening (the others, such
# as "Invalid key" or "No authentication methods available", are refusals a retry cannot fix).
_SSH_GONE = re.compile(r"error reading ssh protocol banner|server connection dropped|"
                       r"ssh session not active|no existing session|eof during negotiation|"
                       r"timeout opening channel|^channel closed", re.I)
_ERRORS = (paramiko.SSHException, paramiko.SFTPError, OSError, EOFError)

# AES-GCM encrypts and authenticates in one call of `cryptography` (AES-NI): paramiko's default,
# aes128-ctr with hmac-sha2-256, makes a second pass over every byte for the MAC. Servers
# without GCM still negotiate from paramiko's usual list, which follows.
_PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
# The request size every SFTP server accepts (paramiko's and OpenSSH's default).
_SAFE_REQUEST = 32 * 1024
# Ceiling whatever a server announces; OpenSSH announces 261120 (256 KiB less 1 KiB).
_MAX_REQUEST = 256 * 1024
# Requests in flight per transfer, as OpenSSH's `sftp -R` default. The server's channel window
# (2 MiB in OpenSSH) is what actually bounds an upload's unanswered bytes.
_IN_FLIGHT = 64
# Our receive window and largest packet on the SFTP channel: what the server may send before we
# read (the most a download holds in memory) and in how large pieces.
_WINDOW = 8 * 1024 * 1024
_MAX_PACKET = 256 * 1024
# The most one read takes from the channel's buffer: all of it, the window.
_RECV = _WINDOW
# The SFTP version a transfer's channel speaks (OpenSSH's: draft-ietf-secsh-filexfer-02).
_SFTP_VERSION = 3
# The largest reply accepted: a read's data and its header (OpenSSH's own client allows 256 KiB).
_MAX_REPLY = _MAX_REQUEST + 1024


class SftpResource(SshConnection, RetryingConnection):
    """An SFTP server (paramiko); host keys are checked against known_hosts."""

    base_path: str = "."

    checks_md5: ClassVar[bool] = False  # SFTP has no standard checksum request: size only

    def describe(self, remote: str) -> str:
        return f"sftp://{self.username}@{self.host}:{self.port}/{self._full(remote)}"

    def _full(self, remote: str) -> str:
        return posixpath.normpath(posixpath.join(self.base_path, safe_relative(remote)))

    def local_path(self, remote: str) -> Path | None:
        return None  # remote: couriers download it

    def _where(self) -> str:
        return f"sftp {self.username}@{self.host}:{self.port}"

    def _connect(self, operation: str) -> tuple[paramiko.SSHClient, paramiko.SFTPClient]:
        client = open_ssh_client(self, operation, self._where(), TransferError)
        try:
            transport = client.get_transport()
            assert transport is not None  # open_ssh_client returns a connected client
            sftp = paramiko.SFTPClient.from_transport(
                transport, window_size=_WINDOW, max_packet_size=_MAX_PACKET)
            if sftp is None:
                raise paramiko.SSHException("the server refused the SFTP channel")
            return client, sftp
        except _ERRORS as failed:
            client.close()
            raise TransferError(f"{self._where()} {operation}: "
                                f"{type(failed).__name__}: {failed}") from failed

    def _list_once(self, pattern: str) -> list[RemoteFile]:
        directory, name = split_pattern(pattern)
        client, sftp = self._connect("list")
        try:
            entries = sftp.listdir_attr(self._full(directory))
        except FileNotFoundError:
            return []
        except _ERRORS as failed:
            raise TransferError(f"{self.describe(directory)} list: {failed}") from failed
        finally:
            client.close()
        return sorted((RemoteFile(joined(directory, e.filename), e.st_size or 0, e.st_mtime)
                       for e in entries if stat.S_ISREG(e.st_mode or 0)
                       and matches(e.filename, name)), key=lambda f: f.path)

    def _download_once(self, remote: str, local: Path) -> int:
        local.parent.mkdir(parents=True, exist_ok=True)
        client, sftp = self._connect("download")
        try:
            session = self._session(client)
            try:
                read_size, _ = _request_sizes(session)
                handle = session.open(self._full(remote), SFTP_FLAG_READ)
                with open(local, "wb") as target:
                    _read_pipelined(session, handle, tracked(target), read_size)
                session.close_handle(handle)
            finally:
                session.close()
            expected = _size(sftp.stat(self._full(remote)), self.describe(remote))
            check_size(self.describe(remote), local.stat().st_size, expected)
            return local.stat().st_size
        except TransferError:
            local.unlink(missing_ok=True)
            raise
        except _ERRORS as failed:
            local.unlink(missing_ok=True)
            raise TransferError(f"{self.describe(remote)} download: {failed}") from failed
        finally:
            client.close()

    def _session(self, client: paramiko.SSHClient) -> "_Session":
        """A transfer's own SFTP channel on the connection's transport."""
        transport = client.get_transport()
        assert transport is not None  # open_ssh_client returns a connected client
        return _Session(transport, self.timeout_seconds)

    def transient_error(self, error: BaseException) -> bool | None:
        """A refused or dropped connection, or a server that died mid-handshake, may come back;
        a refused login or an untrusted host key will not."""
        if isinstance(error, paramiko.AuthenticationException | paramiko.BadHostKeyException
                      | UnknownHostKey | IncompatiblePeer):
            return False
        if isinstance(error, NoValidConnectionsError):
            return True
        if isinstance(error, paramiko.SSHException):
            # Only a cut or half-opened connection is worth another attempt; a bad key, a
            # wrong passphrase, no usable auth method or a refused subsystem are not.
            if _SSH_GONE.search(str(error)):
                return True
            return any(socket_transient(c) for c in causes(error) if c is not error)
        return super().transient_error(error)

    def _upload_once(self, local: Path, remote: str, overwrite: bool, md5: str | None,
                     litter: list[str], retried: bool = False) -> int:
        final = self._full(remote)
        partial = partial_beside(final)
        expected = local.stat().st_size
        client, sftp = self._connect("upload")
        _remove_litter(sftp, litter)
        try:
            _sftp_makedirs(sftp, posixpath.dirname(final))
            if not overwrite and _sftp_exists(sftp, final) and self._kept_existing(
                    remote, retried, sftp.stat(final).st_size or 0, expected):
                return expected
            session = self._session(client)
            try:
                _, write_size = _request_sizes(session)
                handle = session.open(partial, SFTP_FLAG_WRITE | SFTP_FLAG_CREATE
                                      | SFTP_FLAG_TRUNC)
                with open(local, "rb", buffering=0) as source:
                    _write_pipelined(session, tracked(source), handle, write_size)
                session.close_handle(handle)
            finally:
                session.close()
            check_size(self.describe(remote), _size(sftp.stat(partial), partial), expected)
            if overwrite:
                sftp.posix_rename(partial, final)
            else:  # plain SFTP rename refuses an existing target: no race with another writer
                try:
                    sftp.rename(partial, final)
                except OSError as exists:
                    raise TransferError(f"{self.describe(remote)} exists and overwrite is off"
                                        ) from exists
            return _size(sftp.stat(final), final)
        except _ERRORS as failed:
            raise TransferError(f"{self.describe(remote)} upload: {failed}") from failed
        finally:
            try:
                if _sftp_exists(sftp, partial):
                    sftp.remove(partial)
            except _ERRORS:
                litter.append(partial)  # the connection is gone: the next attempt removes it
            client.close()


def _remove_litter(sftp: paramiko.SFTPClient, litter: list[str]) -> None:
    """Remove the temporary files earlier attempts could not (their connection was cut)."""
    for path in list(litter):
        try:
            sftp.remove(path)
        except FileNotFoundError:
            pass
        except _ERRORS:
            continue
        litter.remove(path)


def _sftp_exists(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        sftp.stat(path)
        return True
    except FileNotFoundError:
        return False


def _sftp_makedirs(sftp: paramiko.SFTPClient, directory: str) -> None:
    if directory in ("", ".", "/") or _sftp_exists(sftp, directory):
        return
    _sftp_makedirs(sftp, posixpath.dirname(directory))
    sftp.mkdir(directory)


# ---------------------------------------------------------------- SSH connection (shared)


def _trusted_keys(settings: SshConnection, client: paramiko.SSHClient, operation: str,
                  where: str, error: type[Exception]) -> tuple[str, dict[str, int]]:
    """Load the keys this connection trusts (the pinned one, or known_hosts); returns
    where they came from, for the messages, and the keys known_hosts revokes."""
    if settings.host_key:
        entry = settings.host if settings.port == 22 else f"[{settings.host}]:{settings.port}"
        try:
            key_type, data = settings.host_key.split()[:2]
            key = paramiko.PKey.from_type_string(key_type, base64.b64decode(data))
        except (ValueError, binascii.Error, paramiko.SSHException) as bad:
            raise error(f"{where} {operation}: `host_key` is not a public key line such as "
                        "'ssh-ed25519 AAAA…' (copy it from ssh-keyscan or the server's *.pub "
                        f"file): {bad}") from None
        client.get_host_keys().add(entry, key.get_name(), key)
        return "the pinned `host_key`", {}
    known = os.path.expanduser(settings.known_hosts or "~/.ssh/known_hosts")
    try:
        with open(known, encoding="utf-8", errors="replace") as lines:
            revoked = _load_known_hosts(client.get_host_keys(), lines, known)
    except OSError as missing:
        raise error(f"{where} {operation}: cannot read known_hosts {known}: "
                    f"{missing.strerror}") from missing
    return f"known_hosts {known}", revoked


def _load_known_hosts(keys: paramiko.HostKeys, lines: Iterable[str], known: str
                      ) -> dict[str, int]:
    """Load an OpenSSH known_hosts file into `keys`, returning the revoked keys (their
    `type base64` text → line number).

    paramiko reads marker lines as a host named '@revoked' with a key it cannot decode, and
    that error breaks every connection using the file. Here `@revoked` keys are refused
    wherever they appear (never trusted, even if listed again for a host), `@cert-authority`
    lines are skipped with a warning (paramiko cannot check host certificates), and other
    unreadable lines are skipped with a warning naming their line, as OpenSSH does.
    """
    log = dg.get_dagster_logger("stagecoach.connections")
    revoked: dict[str, int] = {}
    entries: list[tuple[int, HostKeyEntry]] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        marker, _, rest = line.partition(" ") if line.startswith("@") else ("", "", line)
        if marker == "@revoked":
            fields = rest.split()
            if len(fields) >= 3:
                revoked[" ".join(fields[1:3])] = number
            continue
        if marker:
            log.warning(f"known_hosts {known} line {number}: {marker} lines are not supported "
                        "(host certificates cannot be checked): skipped; pin the server's own "
                        "key with `host_key` or list it on a plain line")
            continue
        try:
            entry = HostKeyEntry.from_line(line, number)
        except (paramiko.SSHException, InvalidHostKey, ValueError):
            entry = None
        if entry is None:
            log.warning(f"known_hosts {known} line {number}: not a 'hosts key-type base64' "
                        "line that can be read: skipped")
            continue
        entries.append((number, entry))
    for number, entry in entries:
        if _key_text(entry.key) in revoked:
            log.warning(f"known_hosts {known} line {number}: its key is @revoked on line "
                        f"{revoked[_key_text(entry.key)]}: not trusted")
            continue
        for host in entry.hostnames:
            keys.add(host, entry.key.get_name(), entry.key)
    return revoked


def _key_text(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


def _revoked_refusal(revoked: dict[str, int], key: paramiko.PKey, trusted: str) -> str | None:
    """The message refusing `key` if the known_hosts file revokes it, else None."""
    line = revoked.get(_key_text(key))
    if line is None:
        return None
    return (f"the server's host key {_fingerprint(key)} is REVOKED (@revoked on line {line} of "
            f"{trusted}). Refused: the key was withdrawn, perhaps because it leaked; ask the "
            "server's owner for its new key's fingerprint")


def open_ssh_client(settings: SshConnection, operation: str, where: str,
                    error: type[Exception]) -> paramiko.SSHClient:
    """An authenticated SSH client whose server's host key was checked (pinned `host_key`,
    else known_hosts; an unknown or changed key is refused). Failures raise `error` with a
    message starting with `where` (e.g. 'sftp user@host:22') and `operation`; never a secret."""
    client = paramiko.SSHClient()
    trusted, revoked = _trusted_keys(settings, client, operation, where, error)
    client.set_missing_host_key_policy(_RefuseUnknownHostKey(trusted, revoked))
    try:
        client.connect(settings.host, port=settings.port, username=settings.username,
                       password=settings.password, key_filename=settings.private_key_path,
                       passphrase=settings.private_key_passphrase,
                       timeout=settings.timeout_seconds, banner_timeout=settings.timeout_seconds,
                       auth_timeout=settings.timeout_seconds, allow_agent=False,
                       look_for_keys=False, transport_factory=_transport_preferring_gcm)
        return client
    except paramiko.BadHostKeyException as changed:
        client.close()
        if refusal := _revoked_refusal(revoked, changed.key, trusted):
            raise _permanent(error(f"{where} {operation}: {refusal}")) from None
        raise _permanent(error(
            f"{where} {operation}: the server's host key CHANGED: it offered "
            f"{_fingerprint(changed.key)}, but {trusted} holds "
            f"{_fingerprint(changed.expected_key)}. Refused: someone may be between "
            "Stagecoach and the server, or the server was re-installed; ask its owner for "
            "the new key's fingerprint before updating the trusted key")) from None
    except paramiko.AuthenticationException as refused:
        client.close()
        raise _permanent(error(
            f"{where} {operation}: {type(refused).__name__}: {refused} The server refused the "
            "login: check `username` and `password` or `private_key_path` (and its "
            "passphrase)")) from refused
    except _ERRORS as failed:
        client.close()
        raised = error(f"{where} {operation}: {type(failed).__name__}: {failed}")
        raise (_permanent(raised) if isinstance(failed, UnknownHostKey) else raised) from failed


def _permanent(error: Exception) -> Exception:
    """Mark a refusal no retry can fix (host key, login), whatever the error's class: SFTP's
    TransferError and the SSH step's SshCommandError both read `permanent`."""
    error.permanent = True  # type: ignore[attr-defined]
    return error


# ---------------------------------------------------------------- fast transfers


def _fingerprint(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.fingerprint}"


class UnknownHostKey(paramiko.SSHException):
    """The server's host key is not trusted: no retry can change that."""


class _RefuseUnknownHostKey(paramiko.MissingHostKeyPolicy):
    """Refuse a server whose key is not trusted, saying what to do (paramiko's RejectPolicy
    only says the host is not in known_hosts)."""

    def __init__(self, trusted: str, revoked: dict[str, int]):
        self.trusted, self.revoked = trusted, revoked

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        if refusal := _revoked_refusal(self.revoked, key, self.trusted):
            raise UnknownHostKey(refusal)
        raise UnknownHostKey(
            f"the server's host key {_fingerprint(key)} is unknown: {hostname} is not in "
            f"{self.trusted}. Refused; if this is the right server, check that fingerprint with "
            "its owner, then add the key to known_hosts (ssh-keyscan) or pin it with "
            "`host_key`")


def _transport_preferring_gcm(sock: Any, **settings: Any) -> paramiko.Transport:
    """A paramiko Transport (for `SSHClient.connect(transport_factory=...)`) that offers AES-GCM
    first: measured, it cuts the client's CPU per byte by about a quarter (no separate HMAC
    pass) and the server's too. The server picks from the whole list, so nothing is lost."""
    transport = paramiko.Transport(sock, **settings)
    options = transport.get_security_options()
    preferred = tuple(c for c in _PREFERRED_CIPHERS if c in options.ciphers)
    options.ciphers = preferred + tuple(c for c in options.ciphers if c not in preferred)
    return transport


class _Session:
    """An SFTP session on a channel of its own, carrying one transfer's pipelined requests.

    paramiko's public file interface waits for its writes in batches (every 100 it drains them
    all) and its prefetch parks what it read in a dict scanned on every read: measured with
    `SFTPFile.MAX_REQUEST_SIZE` at the server's limit, `set_pipelined` and 2 MiB writes, and
    `readv` with 64 requests in flight, 0.64-1.0x of this pipeline on upload and 0.65-0.7x on
    download (256 MiB, shared machine). Its pipelining hooks are private, so the transfer speaks
    the few SFTP v3 messages it needs (open, read, write, status, close, limits@openssh.com)
    itself, over paramiko's public `Transport.open_session` and `Channel`: that wire protocol
    does not change with paramiko's versions, its private members may. Everything else (stat,
    rename, mkdir, list, remove) stays with paramiko's `SFTPClient`.
    """

    def __init__(self, transport: paramiko.Transport, timeout: float):
        self.waiting: dict[int, tuple[int, int]] = {}  # request id -> (offset, length)
        self._next_id = 0
        self.extensions: dict[str, bytes] = {}
        self._data, self._at = b"", 0  # what the channel delivered, and how far it was read
        self.channel = transport.open_session(window_size=_WINDOW, max_packet_size=_MAX_PACKET,
                                              timeout=timeout)
        try:
            # A server that stops answering mid-transfer fails the attempt after `timeout`
            # (socket.timeout, transient) instead of hanging it.
            self.channel.settimeout(timeout)
            self.channel.invoke_subsystem("sftp")
            self.send(memoryview(struct.pack(">IBI", 5, CMD_INIT, _SFTP_VERSION)))
            kind, _, body = self.reply(numbered=False)
            if kind != CMD_VERSION:
                raise paramiko.SFTPError(f"expected the server's SFTP version, got type {kind}")
            self.extensions = _extension_pairs(body[4:])
        except BaseException:
            self.channel.close()
            raise

    def close(self) -> None:
        self.channel.close()

    def request_id(self, offset: int = 0, length: int = 0) -> int:
        number, self._next_id = self._next_id, (self._next_id + 1) & 0xFFFFFFFF
        self.waiting[number] = (offset, length)
        return number

    def send(self, packet: memoryview) -> None:
        """Send a whole SFTP packet (length prefix included), one SSH packet's worth at a time.

        paramiko copies what it is given into its own messages before returning, so the caller
        may reuse the buffer. Pieces go as bytes: paramiko's `asbytes` turns a memoryview away
        with two exceptions per SSH packet, dearer than the copy.
        """
        piece = self.channel.out_max_packet_size - 64  # paramiko's payload per SSH packet
        for start in range(0, len(packet), piece):
            self.channel.sendall(packet[start:start + piece].tobytes())

    def _more(self) -> None:
        """Take everything the channel holds, in one piece.

        paramiko's channel buffer copies what a `recv` takes and shifts what it leaves: reading
        a reply's 9-byte header while megabytes wait behind it would move them all, three
        times per reply. Taken whole, the buffer is copied once and cleared.
        """
        tail, self._data, self._at = self._data[self._at:], b"", 0  # the read part freed first
        data = self.channel.recv(_RECV)
        if not data:
            raise EOFError("the server closed the SFTP channel")
        self._data = tail + data if tail else data

    def exactly(self, size: int) -> bytes:
        """The next `size` bytes the server sent (a header, a short reply); EOFError if it
        closed the channel first."""
        while len(self._data) - self._at < size:
            self._more()
        self._at += size
        return self._data[self._at - size:self._at]

    def pieces(self, size: int) -> Iterator[memoryview]:
        """The next `size` bytes as the channel delivered them (a read's data), uncopied."""
        while size:
            if self._at == len(self._data):
                self._more()
            take = min(size, len(self._data) - self._at)
            yield memoryview(self._data)[self._at:self._at + take]
            self._at += take
            size -= take

    def header(self, numbered: bool = True) -> tuple[int, int, int]:
        """(type, request id, body bytes still to read) of the next reply."""
        if not numbered:  # the version reply carries no request id
            length, kind = struct.unpack(">IB", self.exactly(5))
            return kind, -1, length - 1
        length, kind, number = struct.unpack(">IBI", self.exactly(9))
        if length < 5 or length > _MAX_REPLY:
            raise paramiko.SFTPError(f"the server sent a malformed SFTP reply ({length} bytes)")
        return kind, number, length - 5

    def reply(self, numbered: bool = True) -> tuple[int, int, bytes]:
        """(type, request id, body) of the next reply, read whole."""
        kind, number, left = self.header(numbered)
        return kind, number, self.exactly(left)

    def request(self, kind: int, *fields: bytes) -> tuple[int, bytes]:
        """Send one request and wait for its reply (nothing else is in flight)."""
        number = self.request_id()
        body = b"".join(fields)
        self.send(memoryview(struct.pack(">IBI", 5 + len(body), kind, number) + body))
        answer, replied, reply = self.reply()
        if replied not in self.waiting:
            raise paramiko.SFTPError(f"the server answered request {replied}, never sent")
        del self.waiting[replied]
        return answer, reply

    def open(self, path: str, flags: int) -> bytes:
        """The server's handle of `path` opened with SFTP `flags` (no attributes set)."""
        kind, reply = self.request(CMD_OPEN, _string(path.encode()),
                                   struct.pack(">II", flags, 0))
        if kind != CMD_HANDLE:
            _check_status(kind, reply)
            raise paramiko.SFTPError(f"expected a handle, got type {kind}")
        return _strings(reply, 1)[0]

    def close_handle(self, handle: bytes) -> None:
        """Close an open file, every reply to it read first: a write's error counts."""
        _check_status(*self.request(CMD_CLOSE, _string(handle)))


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _strings(body: bytes, count: int) -> list[bytes]:
    """The first `count` SFTP strings (length-prefixed) of `body`."""
    found, at = [], 0
    for _ in range(count):
        (size,) = struct.unpack_from(">I", body, at)
        found.append(body[at + 4:at + 4 + size])
        at += 4 + size
    return found


def _extension_pairs(body: bytes) -> dict[str, bytes]:
    """The extensions a version reply announces (name -> data)."""
    pairs, at = {}, 0
    while at + 4 <= len(body):
        name, data = _strings(body[at:], 2)
        pairs[name.decode(errors="replace")] = data
        at += 8 + len(name) + len(data)
    return pairs


def _check_status(kind: int, body: bytes) -> None:
    """Raise the server's error, as paramiko's SFTPClient does (FileNotFoundError,
    PermissionError, other OSError; EOFError at end of file), unless the reply says OK."""
    if kind != CMD_STATUS:
        raise paramiko.SFTPError(f"expected a status reply, got type {kind}")
    (code,) = struct.unpack_from(">I", body)
    text = _strings(body[4:], 1)[0].decode(errors="replace") if len(body) >= 8 else ""
    if code == SFTP_OK:
        return
    if code == SFTP_EOF:
        raise EOFError(text)
    if code == SFTP_NO_SUCH_FILE:
        raise OSError(errno.ENOENT, text)
    if code == SFTP_PERMISSION_DENIED:
        raise OSError(errno.EACCES, text)
    raise OSError(text)


def _request_sizes(session: _Session) -> tuple[int, int]:
    """(read, write) bytes per request this server accepts.

    OpenSSH says so in its limits@openssh.com extension (as its own `sftp` client asks):
    261120 bytes, eight times paramiko's 32 KiB, so eight times fewer replies for Python to
    parse - the largest single gain measured. A server without the extension (or that refuses
    the request) gets 32 KiB, which every server accepts.
    """
    if "limits@openssh.com" not in session.extensions:
        return _SAFE_REQUEST, _SAFE_REQUEST
    kind, reply = session.request(CMD_EXTENDED, _string(b"limits@openssh.com"))
    if kind != CMD_EXTENDED_REPLY or len(reply) < 32:
        return _SAFE_REQUEST, _SAFE_REQUEST
    # max packet length (the read and write lengths already fit it), read, write, open handles
    _, read, write, _ = struct.unpack_from(">QQQQ", reply)
    return (min(read, _MAX_REQUEST) if read > 0 else _SAFE_REQUEST,
            min(write, _MAX_REQUEST) if write > 0 else _SAFE_REQUEST)


class _ReadsInto(Protocol):
    def readinto(self, buffer: memoryview, /) -> int | None: ...


def _size(attributes: paramiko.SFTPAttributes, where: str) -> int:
    """A file's size as the server reports it; a server that leaves it out is refused."""
    if attributes.st_size is None:
        raise TransferError(f"{where}: the SFTP server did not report the file's size")
    return attributes.st_size


def _fill(source: _ReadsInto, buffer: memoryview) -> int:
    """Read into `buffer` until it is full or the file ends (pipes return short reads)."""
    filled = 0
    while filled < len(buffer):
        count = source.readinto(buffer[filled:])
        if not count:
            break
        filled += count
    return filled


def _write_size(limit: int, channel: paramiko.Channel, handle: bytes) -> int:
    """Data bytes per write request: at most the server's limit, and such that the request fills
    whole SSH packets. paramiko cuts channel data into pieces of the server's max packet less
    64 bytes (32704 for OpenSSH): a 32 KiB write and its header would take a full packet and
    one of 93 bytes, twice the packets for the same data."""
    overhead = 4 + 1 + 4 + 4 + len(handle) + 8 + 4  # length, type, id, handle, offset, size
    piece = channel.out_max_packet_size - 64
    return min(limit, max(1, (limit + overhead) // piece) * piece - overhead)


def _write_pipelined(session: _Session, source: _ReadsInto, handle: bytes, limit: int) -> int:
    """Stream `source` to the open remote `handle` until it ends; return the bytes sent.

    The file is read straight into one reused request buffer behind a prebuilt header (no
    copy on our side, memory flat); up to `_IN_FLIGHT` writes await their replies, and every
    reply is checked before this returns.
    """
    size = _write_size(limit, session.channel, handle)
    head = 4 + 1 + 4 + 4 + len(handle) + 8 + 4
    buffer = bytearray(head + size)
    view = memoryview(buffer)
    struct.pack_into(f">I{len(handle)}s", buffer, 9, len(handle), handle)
    offset = 0
    while count := _fill(source, view[head:]):
        number = session.request_id(offset, count)
        struct.pack_into(">IBI", buffer, 0, head - 4 + count, CMD_WRITE, number)
        struct.pack_into(">QI", buffer, head - 12, offset, count)
        session.send(view[:head + count])
        offset += count
        while len(session.waiting) >= _IN_FLIGHT:
            _write_replied(session)
    while session.waiting:
        _write_replied(session)
    return offset


def _write_replied(session: _Session) -> None:
    kind, number, body = session.reply()
    if session.waiting.pop(number, None) is None:
        raise paramiko.SFTPError(f"the server answered request {number}, never sent")
    _check_status(kind, body)


def _read_pipelined(session: _Session, handle: bytes, target: IO[bytes], limit: int) -> None:
    """Copy the open remote `handle` into `target` until the server reports its end.

    Up to `_IN_FLIGHT` reads of `limit` bytes are outstanding; each reply is written at its
    offset as it arrives, piece by piece as the channel delivers it, so nothing waits in
    memory beyond the channel window. A short reply before the end asks again for the rest,
    as OpenSSH's client does.
    """
    request = struct.pack(f">IBI{len(handle) + 4}s", 1 + 4 + 4 + len(handle) + 12, CMD_READ, 0,
                          _string(handle))

    def read(offset: int, length: int) -> None:
        number = session.request_id(offset, length)
        session.send(memoryview(request[:5] + struct.pack(">I", number) + request[9:]
                                + struct.pack(">QI", offset, length)))

    offset, ended = 0, False
    while True:
        while not ended and len(session.waiting) < _IN_FLIGHT:
            read(offset, limit)
            offset += limit
        if not session.waiting:
            return
        kind, number, left = session.header()
        if number not in session.waiting:
            raise paramiko.SFTPError(f"the server answered request {number}, never sent")
        start, length = session.waiting.pop(number)
        if kind != CMD_DATA:
            try:
                _check_status(kind, session.exactly(left))
            except EOFError:  # SSH_FX_EOF: nothing at or past `start`
                ended = True
                continue
            raise paramiko.SFTPError(f"expected data or end of file, got type {kind}")
        (size,) = struct.unpack(">I", session.exactly(4))
        if size != left - 4 or size > length:
            raise paramiko.SFTPError(f"the server sent {size} bytes for a read of {length}")
        if not size:
            ended = True
            continue
        target.seek(start)
        for piece in session.pieces(size):  # as the channel delivered it: no reassembly
            target.write(piece)
            piece.release()  # so the next piece's read can free the buffer it points into
        if size < length:
            read(start + size, length - size)
