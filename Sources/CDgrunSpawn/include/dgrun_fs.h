#ifndef DGRUN_FS_H
#define DGRUN_FS_H
// statfs(2)'s f_type, which Glibc's Swift module does not expose. 0 or -errno.
int dgrun_fs_magic(const char *path, unsigned long *magic);
#endif
