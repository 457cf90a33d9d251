"""Patch the quickfix 1.16.0 sdist before it is compiled (run by scripts/dev.sh).

Two kinds of change, each asserted against the exact upstream text so a new quickfix
release fails loudly here instead of building unpatched:

* Build: define HAVE_SSL and link OpenSSL, so the SSL acceptor and initiator exist.
* Defects a hostile or broken peer could reach, found by `fixalloc bench fuzz`:
  - disconnect() closed the socket again when called twice (the peer's disconnect and
    ours); by then the descriptor number could belong to another file, our SQLite
    database among them ("disk I/O error").
  - A BodyLength(9) that does not parse left the previous message in the caller's
    buffer and reported success, so that earlier message was processed a second time.
  - Bytes without "8=" or with a huge BodyLength were kept forever: one connection
    could grow the buffer without bound before any logon.
  - ThreadedSocketConnection::send passed the whole length on every partial write.

The version gets a local label (1.16.0+fixalloc1), so an installed copy tells whether it
holds these patches; `quickfix==1.16.0` in pyproject.toml still matches it.
"""

from __future__ import annotations

import sys
from pathlib import Path

LOCAL_VERSION = "1.16.0+fixalloc1"
MAX_BUFFER = 16 * 1024 * 1024  # far above any message we accept (see limits in config)


def _replace(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    found = text.count(old)
    if found != count:
        sys.exit(f"patch_quickfix: {path.name}: expected {count} of {old!r}, found {found}")
    path.write_text(text.replace(old, new))


def patch(src: Path) -> None:
    cpp = src / "C++"
    _replace(src / "setup.py", "            extra_compile_args=[",
             "            define_macros=[('HAVE_SSL', '1')],\n"
             "            libraries=['ssl', 'crypto'],\n"
             "            extra_compile_args=[")
    _replace(src / "setup.cfg", "version = 1.16.0\n", f"version = {LOCAL_VERSION}\n")

    # Close once: the flag is atomic because the session thread and ours both disconnect.
    for name in ("ThreadedSocketConnection", "ThreadedSSLSocketConnection"):
        _replace(cpp / f"{name}.h", "#include <map>\n", "#include <atomic>\n#include <map>\n")
        _replace(cpp / f"{name}.h", "  bool m_disconnect;\n",
                 "  std::atomic<bool> m_disconnect;\n")
        _replace(cpp / f"{name}.cpp", "  m_disconnect = true;\n",
                 "  if (m_disconnect.exchange(true)) {\n    return;\n  }\n")

    # A message that cannot be parsed is dropped, never replaced by the previous one.
    for name, param, loop in (("ThreadedSocketConnection", "msg", "msg"),
                              ("SocketConnection", "msg", "message"),
                              ("ThreadedSSLSocketConnection", "message", "message"),
                              ("SSLSocketConnection", "message", "message")):
        _replace(cpp / f"{name}.cpp", "  } catch (MessageParseError &) {}\n  return true;",
                 f"  }} catch (MessageParseError &) {{\n    {param}.clear();\n  }}\n"
                 "  return true;")
        _replace(cpp / f"{name}.cpp", f"  while (readMessage({loop})) {{\n",
                 f"  while (readMessage({loop})) {{\n    if ({loop}.empty()) {{\n"
                 "      continue;\n    }\n")

    _replace(cpp / "ThreadedSocketConnection.cpp",
             "socket_send(m_socket, msg.c_str() + totalSent, msg.length());",
             "socket_send(m_socket, msg.c_str() + totalSent, msg.length() - totalSent);")

    # Bound what one connection may hold while no complete message is in sight.
    parser = cpp / "Parser.cpp"
    _replace(parser, "    length = IntConvertor::convert(strLength);\n    if (length < 0) {",
             "    length = IntConvertor::convert(strLength);\n"
             f"    if (length < 0 || length > {MAX_BUFFER}) {{")
    _replace(parser, "  pos = m_buffer.find(\"8=\");\n  if (pos == std::string::npos) {\n"
                     "    return false;\n  }",
             "  pos = m_buffer.find(\"8=\");\n  if (pos == std::string::npos) {\n"
             "    // Keep the last byte only: it may be the '8' of a message still arriving.\n"
             "    m_buffer.erase(0, m_buffer.length() - 1);\n    return false;\n  }")
    _replace(parser, "  int length = 0;\n\n  try {\n",
             "  int length = 0;\n\n  try {\n"
             f"    if (m_buffer.length() > {MAX_BUFFER}) {{\n"
             "      throw MessageParseError();\n    }\n")


if __name__ == "__main__":
    patch(Path(sys.argv[1]))
