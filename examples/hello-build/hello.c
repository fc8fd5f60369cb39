#include <stdio.h>
#include <unistd.h>

int main(void) {
    char host[64] = "";
    gethostname(host, sizeof host);
    printf("hello from %s, pid %d\n", host, (int)getpid());
    return 0;
}
