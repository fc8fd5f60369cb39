// SHA-256 for discover's file versions, via OpenSSL's libcrypto loaded on demand (it uses the
// CPU's SHA instructions). Linking a crypto library into dgrun instead cost every `exec` ~1 ms of
// start-up and 5 MiB of memory (swift-crypto brings Foundation and ICU on Linux).
#define _GNU_SOURCE
#include "dgrun_hash.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

typedef void *(*ctx_new_fn)(void);
typedef void (*ctx_free_fn)(void *);
typedef const void *(*md_fn)(void);
typedef int (*init_fn)(void *, const void *, void *);
typedef int (*update_fn)(void *, const void *, size_t);
typedef int (*final_fn)(void *, unsigned char *, unsigned int *);

static struct { ctx_new_fn ctx_new; ctx_free_fn ctx_free; md_fn sha256; init_fn init; update_fn update; final_fn final; } api;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int available;
static int tried;  // load() ran (read without the once: atomically)

static void load(void) {
    __atomic_store_n(&tried, 1, __ATOMIC_RELEASE);
    static const char *const names[] = { "libcrypto.so.3", "libcrypto.so.1.1", "libcrypto.so" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        void *lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (!lib) continue;
        api.ctx_new = (ctx_new_fn)dlsym(lib, "EVP_MD_CTX_new");
        api.ctx_free = (ctx_free_fn)dlsym(lib, "EVP_MD_CTX_free");
        api.sha256 = (md_fn)dlsym(lib, "EVP_sha256");
        api.init = (init_fn)dlsym(lib, "EVP_DigestInit_ex");
        api.update = (update_fn)dlsym(lib, "EVP_DigestUpdate");
        api.final = (final_fn)dlsym(lib, "EVP_DigestFinal_ex");
        if (api.ctx_new && api.ctx_free && api.sha256 && api.init && api.update && api.final) {
            available = 1;
            return;
        }
        dlclose(lib);
    }
}

int dgrun_sha256_available(void) {
    pthread_once(&once, load);
    return available;
}

int dgrun_sha256_started(void) { return __atomic_load_n(&tried, __ATOMIC_ACQUIRE); }

int dgrun_sha256_missed(void) {
    if (!__atomic_load_n(&tried, __ATOMIC_ACQUIRE)) return 0;
    pthread_once(&once, load);  // done already: waits only for a load still under way
    return !available;
}

int dgrun_sha256_file(const char *path, uint8_t digest[32]) {
    return dgrun_sha256_file_stat(path, digest, NULL, NULL);
}

int dgrun_sha256_file_stat(const char *path, uint8_t digest[32], struct stat *before, struct stat *after) {
    pthread_once(&once, load);
    if (!available) return -ENOSYS;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) return -errno;
    int rc = dgrun_sha256_fd(fd, digest, before, after);
    close(fd);
    return rc;
}

int dgrun_sha256_fd(int fd, uint8_t digest[32], struct stat *before, struct stat *after) {
    pthread_once(&once, load);
    if (!available) return -ENOSYS;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return -EINVAL;
    if (before) *before = st;
    size_t size = st.st_size > 0 && st.st_size < (1 << 20) ? (size_t)st.st_size : (1 << 20);
    unsigned char *buffer = malloc(size);
    void *ctx = api.ctx_new();
    int rc = 0;
    if (!buffer || !ctx || !api.init(ctx, api.sha256(), NULL)) rc = -ENOMEM;
    while (rc == 0) {
        ssize_t n = read(fd, buffer, size);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { rc = -errno; break; }
        if (n == 0) break;
        if (!api.update(ctx, buffer, (size_t)n)) rc = -EIO;
    }
    unsigned int length = 0;
    if (rc == 0 && (!api.final(ctx, digest, &length) || length != 32)) rc = -EIO;
    if (rc == 0 && after && fstat(fd, after) != 0) rc = -errno;
    if (ctx) api.ctx_free(ctx);
    free(buffer);
    return rc;
}

// A plain SHA-256 (FIPS 180-4) for short byte strings: the environment digest and other keys of
// an up-to-date check. Loading and initialising libcrypto for them was 9 M of the 83 M
// instructions of a 5,000-dependency no-op (callgrind, bench/noop.sh's task); this costs ~3 k.
static const uint32_t dg_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t dg_ror(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void dg_block(uint32_t h[8], const uint8_t *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = dg_ror(w[i - 15], 7) ^ dg_ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = dg_ror(w[i - 2], 17) ^ dg_ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = k + (dg_ror(e, 6) ^ dg_ror(e, 11) ^ dg_ror(e, 25)) + ((e & f) ^ (~e & g)) + dg_k[i] + w[i];
        uint32_t t2 = (dg_ror(a, 2) ^ dg_ror(a, 13) ^ dg_ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += k;
}

static void dg_sha256_small(const uint8_t *bytes, size_t length, uint8_t digest[32]) {
    uint32_t h[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
    size_t full = length / 64 * 64;
    for (size_t at = 0; at < full; at += 64) dg_block(h, bytes + at);
    uint8_t tail[128] = { 0 };
    size_t rest = length - full;
    for (size_t i = 0; i < rest; i++) tail[i] = bytes[full + i];
    tail[rest] = 0x80;
    size_t blocks = rest + 9 <= 64 ? 1 : 2;
    uint64_t bits = (uint64_t)length * 8;
    for (int i = 0; i < 8; i++) tail[blocks * 64 - 1 - i] = (uint8_t)(bits >> (8 * i));
    for (size_t i = 0; i < blocks; i++) dg_block(h, tail + 64 * i);
    for (int i = 0; i < 8; i++) {
        digest[4 * i] = (uint8_t)(h[i] >> 24); digest[4 * i + 1] = (uint8_t)(h[i] >> 16);
        digest[4 * i + 2] = (uint8_t)(h[i] >> 8); digest[4 * i + 3] = (uint8_t)h[i];
    }
}

int dgrun_sha256_bytes(const void *bytes, size_t length, uint8_t digest[32]) {
    if (length <= (1 << 16)) {
        dg_sha256_small(bytes, length, digest);
        return 0;
    }
    pthread_once(&once, load);
    if (!available) return -ENOSYS;
    void *ctx = api.ctx_new();
    unsigned int out = 0;
    int ok = ctx && api.init(ctx, api.sha256(), NULL) && api.update(ctx, bytes, length)
             && api.final(ctx, digest, &out) && out == 32;
    if (ctx) api.ctx_free(ctx);
    return ok ? 0 : -EIO;
}

int dgrun_sha256_copy(int infd, int outfd, uint8_t digest[32], uint64_t *bytes) {
    pthread_once(&once, load);
    if (!available) return -ENOSYS;
    enum { size = 1 << 20 };
    unsigned char *buffer = malloc(size);
    void *ctx = api.ctx_new();
    int rc = 0;
    uint64_t total = 0;
    if (!buffer || !ctx || !api.init(ctx, api.sha256(), NULL)) rc = -ENOMEM;
    while (rc == 0) {
        ssize_t n = read(infd, buffer, size);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { rc = -errno; break; }
        if (n == 0) break;
        if (!api.update(ctx, buffer, (size_t)n)) { rc = -EIO; break; }
        total += (uint64_t)n;
        for (ssize_t done = 0; outfd >= 0 && done < n;) {
            ssize_t w = write(outfd, buffer + done, (size_t)(n - done));
            if (w < 0 && errno == EINTR) continue;
            if (w < 0) { rc = -errno; break; }
            done += w;
        }
    }
    unsigned int length = 0;
    if (rc == 0 && (!api.final(ctx, digest, &length) || length != 32)) rc = -EIO;
    if (bytes) *bytes = total;
    if (ctx) api.ctx_free(ctx);
    free(buffer);
    return rc;
}

#include <sys/mman.h>
int dgrun_memfd(const char *name) { return memfd_create(name, MFD_CLOEXEC); }

int dgrun_touch(const char *path) {
    struct timespec now[2] = { { 0, UTIME_NOW }, { 0, UTIME_NOW } };
    return utimensat(AT_FDCWD, path, now, AT_SYMLINK_NOFOLLOW) == 0 ? 0 : -errno;
}
