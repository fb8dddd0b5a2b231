"""Docker's json-file log driver: what the monitor (detached containers) and the CLI
(foreground ones) write, and `kobako logs` reads. Kept apart from the monitor so the CLI's
`run` does not import sockets for it."""

from __future__ import annotations

import os
import time

from kobako.runtime import jsonfast

LOG_MAX = 10 << 20   # rotation: 10 MB per file,
LOG_FILES = 3        # 3 files (<id>-json.log, .1, .2)


def now_iso() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


class JsonLog:
    """Docker's json-file driver: one {"log","stream","time"} object per line, rotated by size."""

    def __init__(self, path: str, max_size: int = LOG_MAX, max_files: int = LOG_FILES,
                 compress: bool = False) -> None:
        self.path = path
        self.max_size = max_size
        self.max_files = max_files
        self.compress = compress  # rotated files gzipped: <id>-json.log.1.gz ...
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self.size = os.fstat(self.fd).st_size
        self.partial: dict[str, bytes] = {"stdout": b"", "stderr": b""}

    @classmethod
    def of_container(cls, cdir: str, rec: dict) -> JsonLog:
        """The log <cdir>/<id>-json.log, rotated as the container's --log-opt says. The `local`
        driver keeps the same file with Docker's local defaults (20 MB x 5, compressed); `none`
        keeps nothing."""
        opts = rec.get("logOptions") or {}
        driver = opts.get("driver", "json-file")
        if driver == "none":
            return cls(os.devnull, 0, 1)
        size, files, compress = (20 << 20, 5, True) if driver == "local" else (LOG_MAX, LOG_FILES, False)
        compress = str(opts.get("compress", compress)).lower() in ("true", "1")
        return cls(os.path.join(cdir, f"{rec['id']}-json.log"), int(opts.get("max-size", size)),
                   int(opts.get("max-file", files)), compress)

    def write(self, stream: str, data: bytes) -> None:
        buf = self.partial[stream] + data
        lines = buf.split(b"\n")
        self.partial[stream] = lines.pop()
        if len(self.partial[stream]) > 16384:  # a line without end: write it in pieces
            lines.append(self.partial[stream])
            self.partial[stream] = b""
        out = []
        stamp = now_iso()
        for i, line in enumerate(lines):
            text = line.decode("utf-8", "replace") + ("\n" if i < len(lines) - 1 or buf.endswith(b"\n")
                                                      or self.partial[stream] == b"" else "")
            out.append(jsonfast.dumps({"log": text, "stream": stream, "time": stamp}) + "\n")
        if not out:
            return
        blob = "".join(out).encode()
        if not self.max_size or self.size + len(blob) <= self.max_size:
            self._append(blob)
        else:  # rotate between messages, as Docker's json-file does, however much came at once
            for entry in out:
                self._append(entry.encode())

    def flush(self) -> None:
        for stream, rest in self.partial.items():
            if rest:
                self.partial[stream] = b""
                self._append((jsonfast.dumps({"log": rest.decode("utf-8", "replace"), "stream": stream,
                                              "time": now_iso()}) + "\n").encode())

    def _append(self, data: bytes) -> None:
        if self.max_size and self.size + len(data) > self.max_size and self.size:
            self._rotate()
        try:
            os.write(self.fd, data)
            self.size += len(data)
        except OSError:
            pass  # a full disk must not take the monitor down

    def _rotate(self) -> None:
        os.close(self.fd)
        gz = ".gz" if self.compress else ""
        for i in range(self.max_files - 1, 1, -1):
            if os.path.exists(f"{self.path}.{i - 1}{gz}"):
                os.replace(f"{self.path}.{i - 1}{gz}", f"{self.path}.{i}{gz}")
        if self.max_files <= 1:
            os.unlink(self.path)
        elif self.compress:
            _gzip(self.path, f"{self.path}.1.gz")
        else:
            os.replace(self.path, f"{self.path}.1")
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self.size = 0

    def close(self) -> None:
        self.flush()
        os.close(self.fd)


def _gzip(src: str, dest: str) -> None:
    """The rotated file compressed in place of itself (written aside, then renamed)."""
    import gzip
    import shutil
    with open(src, "rb") as f, gzip.open(dest + ".tmp", "wb", compresslevel=6) as out:
        shutil.copyfileobj(f, out, 1 << 20)
    os.replace(dest + ".tmp", dest)
    os.unlink(src)
