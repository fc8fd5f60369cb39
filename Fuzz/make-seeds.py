#!/usr/bin/env python3
"""Writes the synthetic seeds of Fuzz/corpus/ (the binary formats; the text seeds are plain files).

Run from the repository root: python3 Fuzz/make-seeds.py. Each seed is a small, valid input the
parser accepts, so that the fuzzer starts from inside the format rather than from its magic.
"""
import os
import struct
import subprocess
import tempfile

C = "Fuzz/corpus"


def write(target, name, data):
    os.makedirs(f"{C}/{target}", exist_ok=True)
    with open(f"{C}/{target}/{name}", "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def elf():
    # The smallest programs gcc makes here: no libc (808 bytes), and a dynamic one with DT_RPATH,
    # a library with DT_SONAME and DT_RUNPATH; a build-id note in each.
    z = ["-Wl,-z,noseparate-code", "-Wl,-z,norelro", "-Wl,--build-id"]
    with tempfile.TemporaryDirectory() as d:
        open(f"{d}/tiny.c", "w").write('void _start(void) { __asm__ volatile("mov $60, %eax\\n xor %edi, %edi\\n syscall"); }\n')
        open(f"{d}/dyn.c", "w").write('int puts(const char *);\nint main(void) { return puts("hi"); }\n')
        builds = {
            "tiny-static": ["-static", "-nostdlib", f"{d}/tiny.c"],
            "dyn-rpath": ["-Wl,-rpath,$ORIGIN/../lib:/opt/x", "-Wl,--disable-new-dtags", f"{d}/dyn.c"],
            "libfuzzseed.so": ["-shared", "-fPIC", "-Wl,-soname,libfuzzseed.so.1", "-Wl,-rpath,$ORIGIN",
                               "-Wl,--enable-new-dtags", f"{d}/dyn.c"],
        }
        for name, args in builds.items():
            subprocess.run(["gcc", "-Os", *z, "-o", f"{d}/{name}", *args], check=True)
            subprocess.run(["strip", f"{d}/{name}"], check=True)
            write("FuzzElf", name, open(f"{d}/{name}", "rb").read())


def ld_so_cache():
    # glibc-ld.so.cache1.1: header (48 bytes), entries of 24 bytes, then the strings; string offsets
    # count from the start of the new table. flags 0x0303: x86-64 libc6.
    libs = [("libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6"), ("libm.so.6", "/lib/x86_64-linux-gnu/libm.so.6"),
            ("libz.so.1", "/usr/lib/x86_64-linux-gnu/libz.so.1"), ("libfoo.so", "/lib/i386-linux-gnu/libfoo.so")]
    def table():
        strings = b""
        offsets = []
        base = 48 + 24 * len(libs)
        for key, value in libs:
            k = base + len(strings); strings += key.encode() + b"\0"
            v = base + len(strings); strings += value.encode() + b"\0"
            offsets.append((k, v))
        header = b"glibc-ld.so.cache" + b"1.1" + struct.pack("<IIB3xI12x", len(libs), len(strings), 2, 0)
        entries = b"".join(struct.pack("<IIIIQ", 0x0303 if "i386" not in libs[i][1] else 0x0003, k, v, 0, 0)
                           for i, (k, v) in enumerate(offsets))
        return header + entries + strings
    new = table()
    write("FuzzLdSoCache", "new-format", new)
    # The old table first (magic, 4-byte count, 12-byte entries), then the new one, 8-aligned.
    old = b"ld.so-1.7.0\0" + struct.pack("<I", 1) + struct.pack("<iII", 0x0303, 0, 0)
    old += b"\0" * ((-len(old)) % 8)
    write("FuzzLdSoCache", "old-and-new", old + new)


def dns_query(name):
    header = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return header + labels + struct.pack(">HH", 1, 1)


def sockaddrs():
    # Input: socket type byte (0 unknown, 1 stream, 2 dgram), sockaddr length byte, sockaddr, data.
    def inet(a, port):
        return struct.pack("<H", 2) + struct.pack(">H", port) + bytes(a) + b"\0" * 8
    def inet6(words, port):
        return struct.pack("<H", 10) + struct.pack(">H", port) + b"\0" * 4 + struct.pack(">8H", *words) + b"\0" * 4
    def seed(kind, addr, data=b""):
        return bytes([kind, len(addr)]) + addr + data
    write("FuzzSockaddr", "udp-dns", seed(2, inet([127, 0, 0, 53], 53), dns_query("example.com")))
    query = dns_query("deb.debian.org")
    write("FuzzSockaddr", "tcp-dns", seed(1, inet([10, 0, 0, 1], 53), struct.pack(">H", len(query)) + query))
    write("FuzzSockaddr", "tcp-https", seed(1, inet([93, 184, 216, 34], 443)))
    write("FuzzSockaddr", "inet6-loopback", seed(0, inet6([0, 0, 0, 0, 0, 0, 0, 1], 8080), inet6([0] * 8, 8080)))
    write("FuzzSockaddr", "unix-path", seed(1, struct.pack("<H", 1) + b"/run/postgresql/.s.PGSQL.5432\0"))
    write("FuzzSockaddr", "unix-abstract", seed(1, struct.pack("<H", 1) + b"\0dgrun-seed"))


def trace_log():
    # struct dgrun_trace_event (dgrun_trace.h): kind, nr, pid, exists (int32), flags (int64),
    # seq (uint64), path_len, path2_len, addr_len, data_len (int32); then those bytes.
    def event(kind, nr, seq, path=b"", path2=b"", addr=b"", data=b"", flags=0):
        return struct.pack("<iiiiqQiiii", kind, nr, 2, 1, flags, seq, len(path), len(path2), len(addr), len(data)) \
            + path + path2 + addr + data
    log = event(1, 257, 2, b"/etc/ld.so.cache") + event(2, 59, 1, b"/usr/bin/python3")
    log += event(4, 82, 3, b"/w/out.tmp", b"/w/out.txt", data=bytes(range(32)))
    log += event(5, 42, 4, addr=struct.pack("<H", 2) + struct.pack(">H", 443) + bytes([1, 2, 3, 4]) + b"\0" * 8, flags=1)
    write("FuzzTraceLog", "events", log)
    # Regression: a path length past the end, then a path2 length (its count went negative: a trap).
    header = struct.pack("<iiiiqQiiii", 1, 257, 2, 1, 0, 1, 100, 1, 0, 0)
    write("FuzzTraceLog", "crash-length-past-end", header + b"/etc/hosts")


def store_rows():
    # FuzzStoreRows' input: values, each a tag byte (% 6: 0 NULL, 1 int64, 2 double, 3 text, 4 blob,
    # 5 small int = tag / 6) and its bytes, for task(dir, stale_reason), graph_version(created_at, json),
    # run(21 columns), dependency(13), sample(7).
    def null(): return b"\0"
    def i64(v): return b"\x01" + struct.pack(">q", v)
    def f64(v): return b"\x02" + struct.pack(">d", v)
    def text(s):
        b = s.encode()[:255]
        return b"\x03" + bytes([len(b)]) + b
    graph = '{"schema":"dgrun.graph/1","task":{"id":"t","dir":"/fuzz/task","argv":["true"]},"nodes":[],"edges":[]}'
    values = [text("/fuzz/task"), null(), f64(1.7e9), text(graph)]
    values += [text("finished"), f64(1.7e9), f64(1.7e9 + 2), i64(4242), i64(123456), text('["make","-j2"]'),
               text("sha256:00"), text('["forced"]'), text('{"memory":"512m"}'), i64(0), null(), i64(0), i64(0),
               f64(1.5), f64(0.9), f64(0.2), i64(64 << 20), i64(12), text('{"out/a":"sha256:ab"}'),
               text('[{"t_s":1.0,"knob":"memory.high","from":1,"to":2,"reason":"pressure"}]'), i64(1)]
    values += [text("file:/fuzz/task/in.csv"), text("data"), text("/fuzz/task/in.csv"), text("reads"), text("sha256:cd"),
               i64(10), i64(1), i64(1), i64(77), i64(2049), i64(0), i64(10), i64(1)]
    values += [f64(0.5), i64(1 << 20), f64(0.1), f64(0.0), f64(0.0), f64(0.0), i64(3)]
    write("FuzzStoreRows", "finished-run", b"".join(values))
    running = list(values)
    running[4] = text("running")
    write("FuzzStoreRows", "running-run", b"".join(running))
    # Regressions (Row subscripts trapped): a blob for the task's dir; a pid out of Int32's range in
    # a running run (every exec settles those); a real too large for Int64 as a sample's memory.
    def blob(b): return b"\x04" + bytes([len(b)]) + b
    bad_dir = list(values); bad_dir[0] = blob(b"\x00\xff")
    write("FuzzStoreRows", "crash-dir-blob", b"".join(bad_dir))
    bad_pid = list(running); bad_pid[7] = i64(1 << 40)
    write("FuzzStoreRows", "crash-pid-range", b"".join(bad_pid))
    bad_sample = list(values); bad_sample[-6] = f64(2.7e161)
    write("FuzzStoreRows", "crash-sample-real", b"".join(bad_sample))


def dpkg_index():
    # dgrun-dpkg-index 1: stamp, pair count, name count; the names; then (hash u64, owner u32) pairs.
    names = ["bash=5.2.15-2+b2", "libc6=2.36-9+deb12u4"]
    pairs = [(0x10, 0), (0x20, 1), (0x30, 1)]
    text = f"dgrun-dpkg-index 1\n1700000000000000000 1700000000000000001 {len(pairs)} {len(names)}\n" + "\n".join(names) + "\n"
    write("FuzzDpkg", "index", text.encode() + b"".join(struct.pack("<QI", h, o) for h, o in pairs))


if __name__ == "__main__":
    elf()
    ld_so_cache()
    sockaddrs()
    trace_log()
    store_rows()
    dpkg_index()
