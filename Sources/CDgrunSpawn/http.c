// The remote cache's HTTP client: libcurl loaded on demand (only the easy interface), as hash.c
// loads libcrypto. The option numbers are libcurl's stable ABI (curl/curl.h's CURLOPT_*).
#define _GNU_SOURCE
#include "dgrun_http.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

enum {
    OPT_WRITEDATA = 10001, OPT_URL = 10002, OPT_READDATA = 10009, OPT_ERRORBUFFER = 10010, OPT_WRITEFUNCTION = 20011,
    OPT_READFUNCTION = 20012, OPT_HTTPHEADER = 10023, OPT_UPLOAD = 46, OPT_NOSIGNAL = 99, OPT_TIMEOUT_MS = 155,
    OPT_CONNECTTIMEOUT_MS = 156, OPT_PROTOCOLS = 181, OPT_REDIR_PROTOCOLS = 182, OPT_INFILESIZE_LARGE = 30115,
    INFO_RESPONSE_CODE = 0x200002, PROTO_HTTP = 1, PROTO_HTTPS = 2, GLOBAL_DEFAULT = 3,
};

typedef int (*global_init_fn)(long);
typedef void *(*init_fn)(void);
typedef int (*setopt_fn)(void *, int, ...);
typedef int (*perform_fn)(void *);
typedef int (*getinfo_fn)(void *, int, ...);
typedef void (*cleanup_fn)(void *);
typedef void *(*slist_append_fn)(void *, const char *);
typedef void (*slist_free_fn)(void *);
typedef const char *(*strerror_fn)(int);

static struct {
    global_init_fn global_init; init_fn init; setopt_fn setopt; perform_fn perform; getinfo_fn getinfo;
    cleanup_fn cleanup; slist_append_fn slist_append; slist_free_fn slist_free; strerror_fn strerror;
} curl;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int available;

static void load(void) {
    void *lib = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return;
    curl.global_init = (global_init_fn)dlsym(lib, "curl_global_init");
    curl.init = (init_fn)dlsym(lib, "curl_easy_init");
    curl.setopt = (setopt_fn)dlsym(lib, "curl_easy_setopt");
    curl.perform = (perform_fn)dlsym(lib, "curl_easy_perform");
    curl.getinfo = (getinfo_fn)dlsym(lib, "curl_easy_getinfo");
    curl.cleanup = (cleanup_fn)dlsym(lib, "curl_easy_cleanup");
    curl.slist_append = (slist_append_fn)dlsym(lib, "curl_slist_append");
    curl.slist_free = (slist_free_fn)dlsym(lib, "curl_slist_free_all");
    curl.strerror = (strerror_fn)dlsym(lib, "curl_easy_strerror");
    if (curl.global_init && curl.init && curl.setopt && curl.perform && curl.getinfo && curl.cleanup && curl.slist_append
        && curl.slist_free && curl.strerror && curl.global_init(GLOBAL_DEFAULT) == 0) {
        available = 1;
        return;
    }
    dlclose(lib);
}

int dgrun_http_available(void) {
    pthread_once(&once, load);
    return available;
}

struct upload { const char *bytes; size_t length, offset; };

static size_t on_read(char *buffer, size_t size, size_t count, void *data) {
    struct upload *up = data;
    size_t n = size * count, left = up->length - up->offset;
    if (n > left) n = left;
    memcpy(buffer, up->bytes + up->offset, n);
    up->offset += n;
    return n;
}

struct download { int fd; long long max, written; };

static size_t on_write(char *buffer, size_t size, size_t count, void *data) {
    struct download *down = data;
    int fd = down->fd;
    size_t n = size * count;
    down->written += (long long)n;
    if (down->max > 0 && down->written > down->max) return 0;  // aborts the transfer
    for (size_t done = 0; fd >= 0 && done < n;) {
        ssize_t w = write(fd, buffer + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return 0;  // aborts the transfer
        done += (size_t)w;
    }
    return n;
}

int dgrun_http(const char *method, const char *url, const char *header, const void *body, size_t length, int outfd,
               long long max_bytes, long connect_ms, long total_ms, long *status, char *err, size_t errlen) {
    pthread_once(&once, load);
    if (!available) return -ENOSYS;
    void *easy = curl.init();
    if (!easy) { snprintf(err, errlen, "curl_easy_init failed"); return -EIO; }
    char errbuf[256] = "";
    void *headers = curl.slist_append(NULL, "Expect:");
    if (header && *header) headers = curl.slist_append(headers, header);
    struct upload up = { body, length, 0 };
    struct download down = { outfd, max_bytes, 0 };
    curl.setopt(easy, OPT_URL, url);
    curl.setopt(easy, OPT_PROTOCOLS, (long)(PROTO_HTTP | PROTO_HTTPS));
    curl.setopt(easy, OPT_REDIR_PROTOCOLS, (long)(PROTO_HTTP | PROTO_HTTPS));
    curl.setopt(easy, OPT_NOSIGNAL, 1L);
    curl.setopt(easy, OPT_CONNECTTIMEOUT_MS, connect_ms);
    curl.setopt(easy, OPT_TIMEOUT_MS, total_ms);
    curl.setopt(easy, OPT_ERRORBUFFER, errbuf);
    curl.setopt(easy, OPT_HTTPHEADER, headers);
    curl.setopt(easy, OPT_WRITEFUNCTION, on_write);
    curl.setopt(easy, OPT_WRITEDATA, &down);
    if (strcmp(method, "PUT") == 0) {
        curl.setopt(easy, OPT_UPLOAD, 1L);
        curl.setopt(easy, OPT_READFUNCTION, on_read);
        curl.setopt(easy, OPT_READDATA, &up);
        curl.setopt(easy, OPT_INFILESIZE_LARGE, (long long)length);
    }
    int rc = curl.perform(easy);
    long code = 0;
    if (rc == 0) curl.getinfo(easy, INFO_RESPONSE_CODE, &code);
    else if (max_bytes > 0 && down.written > max_bytes) snprintf(err, errlen, "the response is longer than the %lld bytes expected; aborted", max_bytes);
    else snprintf(err, errlen, "%s", errbuf[0] ? errbuf : curl.strerror(rc));
    curl.slist_free(headers);
    curl.cleanup(easy);
    *status = code;
    if (rc != 0 && max_bytes > 0 && down.written > max_bytes) return -EFBIG;
    return rc == 0 ? 0 : -EIO;
}
