// Synthetic memory/CPU shapes for bench/tuning.sh:
//   workload steady|ramp|spike|phase|cpu
// Memory is touched page by page, so that it is really used (and charged to the cgroup).
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024L * 1024L)

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static char *blocks[1024];
static int nblocks;

// Grows (or shrinks) the resident set to `mib` MiB in 1 MiB blocks.
static void resize(long mib) {
    while (nblocks < mib) {
        blocks[nblocks] = malloc(MIB);
        if (!blocks[nblocks]) { perror("malloc"); exit(1); }
        memset(blocks[nblocks], nblocks & 0xff, MIB);
        nblocks++;
    }
    while (nblocks > mib) free(blocks[--nblocks]);
}

static void hold(double seconds) { usleep((useconds_t)(seconds * 1e6)); }

static void ramp(long from, long to, double seconds) {
    double start = now();
    for (;;) {
        double f = (now() - start) / seconds;
        if (f >= 1) break;
        resize(from + (long)((to - from) * f));
        usleep(10000);
    }
    resize(to);
}

static void *spin(void *arg) {
    double end = now() + *(double *)arg;
    volatile unsigned long x = 0;
    while (now() < end) x++;
    return NULL;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "steady";
    // glibc would keep freed 1 MiB blocks in its heap: give them back so usage can fall.
    setenv("MALLOC_TRIM_THRESHOLD_", "0", 1);
    if (!strcmp(mode, "steady")) { resize(120); hold(2.0); }
    else if (!strcmp(mode, "ramp")) { ramp(10, 200, 2.0); hold(0.3); }
    else if (!strcmp(mode, "spike")) { resize(50); hold(0.8); resize(300); hold(0.3); resize(50); hold(0.8); }
    else if (!strcmp(mode, "phase")) { resize(60); hold(1.2); resize(180); hold(1.2); }
    else if (!strcmp(mode, "cpu")) {
        resize(20);
        double seconds = 2.0;
        pthread_t t[2];
        for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, spin, &seconds);
        for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    } else { fprintf(stderr, "usage: workload steady|ramp|spike|phase|cpu\n"); return 2; }
    return 0;
}
