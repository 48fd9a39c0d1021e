/*
 * unit.h - what every unit test includes: cmocka (with the headers it needs
 * first), a table-size macro, and temporary-directory helpers.
 *
 * Temporary directories live under $TMPDIR (or /tmp) and are removed with
 * everything in them by unit_tmpdir_remove(), so tests leave nothing behind
 * and never share files. Not for anything that runs a server or a network.
 */
#ifndef BZ_UNIT_H
#define BZ_UNIT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define UNIT_COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Creates a fresh directory; path receives its name (at least 256 bytes). */
static inline void unit_tmpdir_make(char *path, size_t len)
{
    const char *base = getenv("TMPDIR");
    snprintf(path, len, "%s/bazaar-unit-XXXXXX", base && base[0] ? base : "/tmp");
    assert_non_null(mkdtemp(path));
}

static inline int unit__rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Removes the directory and everything under it. */
static inline void unit_tmpdir_remove(const char *path)
{
    nftw(path, unit__rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* Writes text to dir/name and puts the full path into out. */
static inline void unit_write_file(const char *dir, const char *name, const char *text, char *out,
                                   size_t outlen)
{
    snprintf(out, outlen, "%s/%s", dir, name);
    FILE *f = fopen(out, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

#endif
