#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

// sqlite3_config and sqlite3_db_config are variadic, which Swift does not call: one wrapper each.

// Leaves the WAL as it is when a connection closes (as an exit does): a no-op check that closes
// its task's store when done would otherwise checkpoint, and fsync, every store it read.
static inline int dgrun_sqlite3_no_checkpoint_on_close(sqlite3 *db) {
    return sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, (int *)0);
}

// No up-front page-cache block per connection (20 pages, 88 KiB, mostly never used by a task's
// small store): pages are allocated as they are read. Before the first open only.
static inline int dgrun_sqlite3_no_initial_page_cache(void) {
    return sqlite3_config(SQLITE_CONFIG_PAGECACHE, (void *)0, 0, 0);
}

// No memory statistics: with them every allocation takes one process-wide mutex, for which a
// workspace's checks on all CPUs queue. dgrun never reads them. Before the first open only.
static inline int dgrun_sqlite3_no_memory_statistics(void) {
    return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

// Run as root, SQLite gives each WAL and -shm file it opens the database's owner, even the owner
// it has: fchown to the same ids is still an inode change (its ctime), journalled, twice per store
// a command opens. Only a real change is made. After the sqlite3_config calls: this initialises.
static int dgrun_sqlite3_fchown_to_change(int fd, uid_t uid, gid_t gid) {
    struct stat st;
    if (fstat(fd, &st) == 0 && st.st_uid == uid && st.st_gid == gid) return 0;
    return fchown(fd, uid, gid);
}

static inline int dgrun_sqlite3_chown_only_to_change(void) {
    sqlite3_vfs *vfs = sqlite3_vfs_find(0);
    if (vfs == 0 || vfs->iVersion < 3 || vfs->xSetSystemCall == 0) return SQLITE_ERROR;
    return vfs->xSetSystemCall(vfs, "fchown", (sqlite3_syscall_ptr)dgrun_sqlite3_fchown_to_change);
}
