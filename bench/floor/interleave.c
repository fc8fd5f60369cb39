// Interleaved timing: every round runs each command once, in an order shuffled per round, and
// the wall time of each run is recorded. hyperfine runs one command's runs in a block, so a host
// whose speed drifts (another guest on the same machine) moves one block against another; in
// turn, the drift is shared. The order is shuffled because what a sandbox leaves to finish in the
// background (its pid 1's teardown) slows whichever command comes next on two CPUs: in a fixed
// order that is always the same one. Commands are split on spaces (no shell), their output goes
// to /dev/null.
//   interleave ROUNDS NAME CMD [NAME CMD]...    prints "NAME median p25 p75" in ms, one per line
#define _GNU_SOURCE
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static char **split(char *command) {
    size_t n = 0, cap = 8;
    char **argv = malloc(cap * sizeof *argv);
    for (char *word = strtok(command, " "); word; word = strtok(NULL, " ")) {
        if (n + 2 > cap) argv = realloc(argv, (cap *= 2) * sizeof *argv);
        argv[n++] = word;
    }
    argv[n] = NULL;
    return argv;
}

int main(int argc, char **argv) {
    if (argc < 4 || (argc - 2) % 2 != 0) {
        fprintf(stderr, "usage: interleave ROUNDS NAME CMD [NAME CMD]...\n");
        return 2;
    }
    int rounds = atoi(argv[1]), warmup = 3, commands = (argc - 2) / 2;
    char ***args = calloc(commands, sizeof *args);
    double *times = calloc((size_t)commands * rounds, sizeof *times);
    for (int c = 0; c < commands; c++) args[c] = split(strdup(argv[3 + 2 * c]));
    posix_spawn_file_actions_t quiet;
    posix_spawn_file_actions_init(&quiet);
    posix_spawn_file_actions_addopen(&quiet, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&quiet, 2, "/dev/null", O_WRONLY, 0);
    int *order = calloc(commands, sizeof *order);
    srand(1);
    for (int r = -warmup; r < rounds; r++) {
        for (int c = 0; c < commands; c++) order[c] = c;
        for (int c = commands - 1; c > 0; c--) {  // Fisher-Yates
            int k = rand() % (c + 1), t = order[c];
            order[c] = order[k];
            order[k] = t;
        }
        for (int i = 0; i < commands; i++) {
            int c = order[i];
            pid_t pid;
            double start = now_ms();
            if (posix_spawnp(&pid, args[c][0], &quiet, NULL, args[c], environ) != 0) {
                fprintf(stderr, "interleave: cannot run %s\n", args[c][0]);
                return 1;
            }
            int status;
            while (waitpid(pid, &status, 0) < 0) {}
            if (r >= 0) times[(size_t)c * rounds + r] = now_ms() - start;
        }
    }
    for (int c = 0; c < commands; c++) {
        double *t = times + (size_t)c * rounds;
        qsort(t, rounds, sizeof *t, compare);
        printf("%s\t%.3f\t%.3f\t%.3f\n", argv[2 + 2 * c], t[rounds / 2], t[rounds / 4], t[(3 * rounds) / 4]);
    }
    return 0;
}
