// Thin wrappers for the monitor's wake-up sources (see dgrun_events.h).
#include "dgrun_events.h"

#include <sys/eventfd.h>
#include <sys/inotify.h>

int dgrun_eventfd(unsigned int initial, int nonblocking) {
    return eventfd(initial, EFD_CLOEXEC | (nonblocking ? EFD_NONBLOCK : 0));
}

int dgrun_inotify(void) { return inotify_init1(IN_CLOEXEC | IN_NONBLOCK); }

int dgrun_inotify_watch_modify(int fd, const char *path) { return inotify_add_watch(fd, path, IN_MODIFY); }
