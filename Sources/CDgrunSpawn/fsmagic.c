#include "dgrun_fs.h"
#include <errno.h>
#include <sys/vfs.h>

int dgrun_fs_magic(const char *path, unsigned long *magic) {
    struct statfs fs;
    if (statfs(path, &fs) != 0) return -errno;
    *magic = (unsigned long)fs.f_type;
    return 0;
}
