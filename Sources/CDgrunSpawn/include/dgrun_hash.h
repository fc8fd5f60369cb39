#ifndef DGRUN_HASH_H
#define DGRUN_HASH_H
#include <stddef.h>
#include <stdint.h>
// SHA-256 of a file's content through the system's libcrypto, loaded with dlopen on first use so
// that `dgrun exec` never pays for it. 0, -ENOSYS when libcrypto is not there, or -errno.
int dgrun_sha256_file(const char *path, uint8_t digest[32]);
// The same, with the file's stat before and after it was read (either may be NULL): equal stats
// mean the digest is of one version of the file.
#include <sys/stat.h>
int dgrun_sha256_file_stat(const char *path, uint8_t digest[32], struct stat *before, struct stat *after);
// The same for an open file (read from its current offset; the caller closes it).
int dgrun_sha256_fd(int fd, uint8_t digest[32], struct stat *before, struct stat *after);
// SHA-256 of a byte string; same return values.
int dgrun_sha256_bytes(const void *bytes, size_t length, uint8_t digest[32]);
// Copies infd to outfd (outfd -1: only hashes) from their offsets, hashing what passes, and says
// how many bytes did; same return values. The cache checks a blob's digest while restoring it.
int dgrun_sha256_copy(int infd, int outfd, uint8_t digest[32], uint64_t *bytes);
// An anonymous in-memory file (memfd_create, close-on-exec): the cache's downloads land there.
int dgrun_memfd(const char *name);
// Sets a file's times to now without following a link: the cache's last-used mark.
int dgrun_touch(const char *path);
// 1 when libcrypto could be loaded, else 0 (loads it: ~1.2 ms, once).
int dgrun_sha256_available(void);
// 1 once libcrypto's load has begun (or is done), else 0.
int dgrun_sha256_started(void);
// 1 when a hash was asked for and libcrypto could not be loaded; 0 otherwise, also when nothing
// was hashed yet (this loads nothing).
int dgrun_sha256_missed(void);
#endif
