"""No password at rest: quickfix's FileStore keeps our Logon, password included, for resend.

quickfix persists every message it sends, admin messages too, in `<session>.body`, and
offers no hook between building a Logon and storing it. A Logon is never resent (on a
ResendRequest quickfix replaces admin messages with a SequenceReset-GapFill), so its
stored copy only has to keep its length and position. Right after quickfix stores it,
and before the bytes go on the wire, the wire log's `onOutgoing` calls `scrub_sent`,
which overwrites the password's value in the body file with as many `*`; the header
file's offsets stay valid and resend keeps working. `scrub_files` repeats this over
every store at start-up, for a process killed between the two steps.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

_SECRET_VALUE = re.compile(rb"\x01(?:554|925)=([^\x01]*)")
_MESSAGE = re.compile(rb"8=FIX[^\x01]*\x01.*?\x0110=\d{3}\x01", re.DOTALL)


def _mask_one(message: bytes) -> bytes:
    """Mask the secrets of one whole message and give it its new CheckSum(10).

    quickfix checks BodyLength and CheckSum when it reads a stored message back for a
    resend; the length is unchanged by a same-length mask, the checksum must be redone.
    """
    clean = _SECRET_VALUE.sub(lambda m: m.group(0)[: m.start(1) - m.start(0)]
                              + b"*" * (m.end(1) - m.start(1)), message)
    if clean == message:
        return message
    body = clean[: clean.rindex(b"10=")]
    return body + b"10=%03d\x01" % (sum(body) % 256)


def masked(data: bytes) -> bytes:
    """The same bytes with every Password/NewPassword value replaced by as many '*'."""
    return _MESSAGE.sub(lambda m: _mask_one(m.group(0)), data)


def body_file(store_dir: Path, session_key: str) -> Path:
    """quickfix's FileStore naming: <BeginString>-<Sender>-<Target>.body."""
    begin, ids = session_key.split(":", 1)
    sender, target = ids.split("->", 1)
    return store_dir / f"{begin}-{sender}-{target}.body"


def scrub_sent(body: Path, sent: bytes) -> bool:
    """Mask the secret in the message just appended to `body`; True when it was found."""
    clean = masked(sent)
    if clean == sent:
        return False
    fd = os.open(body, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        offset = size - len(sent)
        if offset < 0 or os.pread(fd, len(sent), offset) != sent:
            return False
        os.pwrite(fd, clean, offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def scrub_files(store_dirs: Iterable[Path]) -> int:
    """Mask every stored secret under these FileStore folders; returns files rewritten."""
    changed = 0
    for folder in store_dirs:
        if not folder.is_dir():
            continue
        for body in folder.glob("*.body"):
            data = body.read_bytes()
            clean = masked(data)
            if clean != data:
                with body.open("r+b") as fh:
                    fh.write(clean)
                    fh.flush()
                    os.fsync(fh.fileno())
                changed += 1
    return changed


def secure_state_dir(state_dir: Path) -> None:
    """The state folder 0700 and every file in it 0600, whatever the umask said before.

    The process's own umask is set to 077 first, so files quickfix and SQLite create
    later (stores, WAL, logs) are private from the start.
    """
    os.umask(0o077)
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)
    for path in state_dir.rglob("*"):
        if path.is_symlink():
            continue
        try:
            os.chmod(path, 0o700 if path.is_dir() else 0o600)
        except FileNotFoundError:
            # Gone since the listing: SQLite removes its -shm and -wal files when the last
            # connection to the database closes (a restart after a kill found this).
            continue
