#ifndef DGRUN_HTTP_H
#define DGRUN_HTTP_H
#include <stddef.h>
// One HTTP exchange through the system's libcurl (libcurl.so.4), loaded with dlopen on first use
// so that dgrun's start-up never pays for it. http and https only, no redirects, no signals.
// method: "GET" or "PUT" (with body/length); the response body goes to outfd (-1: dropped).
// header: one extra "Name: value" line or NULL. max_bytes: a response body longer than this aborts
// the transfer (0: no bound), so a hostile server cannot fill memory or disk. Returns 0 with *status set when the server
// answered; -ENOSYS when libcurl is missing; -EFBIG when the body passed max_bytes; -EIO when the
// transfer failed (err says why).
int dgrun_http(const char *method, const char *url, const char *header, const void *body, size_t length, int outfd,
               long long max_bytes, long connect_ms, long total_ms, long *status, char *err, size_t errlen);
// 1 when libcurl could be loaded, else 0.
int dgrun_http_available(void);
#endif
