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

static void load(void) {
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

int dgrun_sha256_bytes(const void *bytes, size_t length, uint8_t digest[32]) {
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
