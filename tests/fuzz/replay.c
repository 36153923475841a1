/*
 * replay.c: runs a libFuzzer harness without libFuzzer, for ctest.
 *
 *   fuzz_<name>_replay [--skip LIST] PATH...
 *
 * Feeds every regular file of each directory PATH (in name order), or the
 * file PATH itself, to LLVMFuzzerTestOneInput once. A PATH that does not
 * exist is skipped with a note, so a harness without crashes needs no
 * empty directory. LIST names files (one base name a line, '#' starts a
 * comment) that are known to crash today and are skipped. The harness
 * aborts on a broken invariant and the sanitizers on a bug, so getting to
 * the end is the verdict: exit status 0.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SKIP_MAX 256
#define NAME_MAX_LEN 256

static char skip[SKIP_MAX][NAME_MAX_LEN];
static int n_skip;

static void read_skip_list(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[NAME_MAX_LEN];
    if (!f)
        return; /* no list: nothing is known to crash */
    while (n_skip < SKIP_MAX && fgets(line, sizeof line, f)) {
        line[strcspn(line, "#\r\n")] = 0;
        size_t n = strlen(line);
        while (n && (line[n - 1] == ' ' || line[n - 1] == '\t'))
            line[--n] = 0;
        if (n)
            memcpy(skip[n_skip++], line, n + 1);
    }
    fclose(f);
}

static int skipped(const char *name)
{
    for (int i = 0; i < n_skip; i++)
        if (!strcmp(skip[i], name))
            return 1;
    return 0;
}

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: cannot open %s\n", path);
        return 1;
    }
    size_t cap = 4096, n = 0, got;
    uint8_t *buf = malloc(cap);
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            uint8_t *bigger = realloc(buf, cap * 2);
            if (!bigger) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = bigger;
            cap *= 2;
        }
    }
    fclose(f);
    if (!buf) {
        fprintf(stderr, "replay: out of memory reading %s\n", path);
        return 1;
    }
    fprintf(stderr, "replay: %s (%zu bytes)\n", path, n);
    LLVMFuzzerTestOneInput(buf, n);
    free(buf);
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs every regular file of dir in name order; returns the number of failures. */
static int run_dir(const char *dir, int *ran, int *skips)
{
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "replay: cannot open directory %s\n", dir);
        return 1;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    int bad = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **more = realloc(names, cap * sizeof *names);
            if (!more) {
                bad = 1;
                break;
            }
            names = more;
        }
        names[n] = strdup(e->d_name);
        if (!names[n]) {
            bad = 1;
            break;
        }
        n++;
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof *names, by_name);
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            if (skipped(names[i])) {
                fprintf(stderr, "replay: %s skipped: listed as a known crash\n", path);
                ++*skips;
            } else {
                bad += run_file(path);
                ++*ran;
            }
        }
        free(names[i]);
    }
    free(names);
    return bad;
}

int main(int argc, char **argv)
{
    int bad = 0, ran = 0, skips = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (!strcmp(argv[i], "--skip") && i + 1 < argc) {
            read_skip_list(argv[++i]);
            continue;
        }
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: %s does not exist, nothing to replay there\n", argv[i]);
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            bad += run_dir(argv[i], &ran, &skips);
        } else {
            bad += run_file(argv[i]);
            ran++;
        }
    }
    fprintf(stderr, "replay: %d inputs ran, %d known crashes skipped, %d unreadable\n", ran,
            skips, bad);
    return bad ? 1 : 0;
}
