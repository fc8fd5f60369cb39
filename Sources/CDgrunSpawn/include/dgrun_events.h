#ifndef DGRUN_EVENTS_H
#define DGRUN_EVENTS_H
#include <stdint.h>
// eventfd(2) and inotify(7), which Glibc's Swift module does not expose. Each returns an fd
// (close-on-exec; nonblocking when asked) or -1 with errno set.
int dgrun_eventfd(unsigned int initial, int nonblocking);
int dgrun_inotify(void);
// Watches `path` for IN_MODIFY; the watch descriptor or -1.
int dgrun_inotify_watch_modify(int fd, const char *path);
#endif
