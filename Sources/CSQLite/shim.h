#include <sqlite3.h>

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
