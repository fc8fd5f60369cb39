#include <stdio.h>

int score(int id, int value);

/* score IN OUT: one "id score" line per "id value" line of IN. */
int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: score IN OUT\n"); return 2; }
    FILE *in = fopen(argv[1], "r"), *out = fopen(argv[2], "w");
    if (!in || !out) { perror("score"); return 1; }
    int id, value;
    while (fscanf(in, "%d %d", &id, &value) == 2) fprintf(out, "%d %d\n", id, score(id, value));
    return fclose(out) == 0 ? 0 : 1;
}
