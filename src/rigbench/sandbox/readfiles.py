"""Read named files from one folder without following anything: no symbolic link, FIFO, device or socket,
nothing past a size limit. Standard library only: it also runs inside the bubblewrap sandbox
(`python3 -I readfiles.py DIR LIMIT NAME...`, printing JSON), where the files are."""

import json
import os
import stat
import sys


def read_regular(folder, names, limit):
    """{name: {"text": str} | {"error": why}} for each name; a missing file is left out."""
    out = {}
    try:
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as e:
        return {n: {"error": f"the folder cannot be opened ({e.strerror})"} for n in names}
    try:
        for name in names:
            try:
                st = os.lstat(name, dir_fd=dfd)
            except FileNotFoundError:
                continue
            except OSError as e:
                out[name] = {"error": f"cannot be read ({e.strerror})"}
                continue
            if not stat.S_ISREG(st.st_mode):
                out[name] = {"error": f"is a {_kind(st.st_mode)}, not a regular file"}
                continue
            out[name] = _read(dfd, name, st, limit)
    finally:
        os.close(dfd)
    return out


def _read(dfd, name, st, limit):
    try:
        # O_NONBLOCK: a FIFO swapped in after the lstat cannot hang the open
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=dfd)
    except OSError as e:
        return {"error": f"cannot be read ({e.strerror})"}
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            return {"error": "was replaced while it was read"}
        data = os.read(fd, limit + 1)
    except OSError as e:
        return {"error": f"cannot be read ({e.strerror})"}
    finally:
        os.close(fd)
    if len(data) > limit:
        return {"error": f"is larger than {limit} bytes"}
    return {"text": data.decode("utf-8", errors="replace")}


def _kind(mode):
    for test, kind in ((stat.S_ISLNK, "symbolic link"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISDIR, "folder"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return kind
    return "special file"


if __name__ == "__main__":
    print(json.dumps(read_regular(sys.argv[1], sys.argv[3:], int(sys.argv[2]))))
