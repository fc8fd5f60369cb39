/* The scoring rule shared by every user of libscore. */
int score(int id, int value) { return (value * 31 + id) % 997; }
