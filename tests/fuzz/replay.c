/* A main() for a harness built without libFuzzer (gcc, ctest): replays every file of the directories or files
 * given, so a harness's corpus runs in every build; with -random N also N inputs made from the corpus files
 * by a fixed-seed mutator (bytes flipped, inserted, cut; pieces of two files spliced). Exits 0 when no input
 * crashed (a broken invariant aborts). */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct input {
    uint8_t *p;
    size_t n;
} input_t;

static input_t inputs[4096];
static int ninputs;

static void load(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL || ninputs == (int)(sizeof(inputs) / sizeof(inputs[0]))) {
        if (f)
            fclose(f);
        return;
    }
    uint8_t *buf = malloc(1 << 20);
    size_t n = fread(buf, 1, 1 << 20, f);
    fclose(f);
    inputs[ninputs++] = (input_t){buf, n};
}

static void load_arg(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return;
    if (!S_ISDIR(st.st_mode)) {
        load(path);
        return;
    }
    DIR *d = opendir(path);
    for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.')
            continue;
        char p[4096];
        snprintf(p, sizeof(p), "%s/%s", path, e->d_name);
        load(p);
    }
    if (d)
        closedir(d);
}

static uint64_t seed = 0x5eed5eedu;

static uint32_t rnd(uint32_t n)
{
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    return n ? (uint32_t)(seed >> 33) % n : 0;
}

static size_t mutate(uint8_t *out, size_t cap)
{
    const input_t *a = &inputs[rnd((uint32_t)ninputs)], *b = &inputs[rnd((uint32_t)ninputs)];
    size_t n = a->n < cap ? a->n : cap;
    memcpy(out, a->p, n);
    for (int k = (int)rnd(8); k >= 0; k--) {
        switch (rnd(4)) {
        case 0: /* flip a byte */
            if (n)
                out[rnd((uint32_t)n)] = (uint8_t)rnd(256);
            break;
        case 1: /* insert a byte */
            if (n < cap) {
                size_t at = rnd((uint32_t)n + 1);
                memmove(out + at + 1, out + at, n - at);
                out[at] = (uint8_t)rnd(256);
                n++;
            }
            break;
        case 2: /* cut */
            if (n)
                n = rnd((uint32_t)n) + 1;
            break;
        default: { /* splice the tail of another input */
            size_t at = n ? rnd((uint32_t)n) : 0, from = b->n ? rnd((uint32_t)b->n) : 0;
            size_t len = b->n - from < cap - at ? b->n - from : cap - at;
            memcpy(out + at, b->p + from, len);
            n = at + len;
        }
        }
    }
    return n;
}

int main(int argc, char **argv)
{
    long random = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-random") == 0 && i + 1 < argc)
            random = atol(argv[++i]);
        else
            load_arg(argv[i]);
    }
    for (int i = 0; i < ninputs; i++)
        LLVMFuzzerTestOneInput(inputs[i].p, inputs[i].n);
    static uint8_t buf[8192];
    for (long i = 0; i < random && ninputs > 0; i++)
        LLVMFuzzerTestOneInput(buf, mutate(buf, sizeof(buf)));
    printf("%d passed, 0 failed\n", ninputs + (int)(ninputs ? random : 0));
    for (int i = 0; i < ninputs; i++)
        free(inputs[i].p);
    return 0;
}
