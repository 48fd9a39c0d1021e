#include "error.h"

#include <stddef.h>

struct bz__error_row {
    int code;
    int status;
    const char *message;
};

static const struct bz__error_row bz__errors[] = {
#define BZ__ROW(name, status, msg) {BZ_##name, status, msg},
    BZ_ERROR_MAP(BZ__ROW)
#undef BZ__ROW
};

static const struct bz__error_row *bz__error_find(int err)
{
    for (unsigned i = 0; i < sizeof bz__errors / sizeof bz__errors[0]; i++)
        if (bz__errors[i].code == err)
            return &bz__errors[i];
    return NULL;
}

const char *bz_strerror(int err)
{
    if (err == 0)
        return "ok";
    const struct bz__error_row *row = bz__error_find(err);
    return row ? row->message : "unknown error";
}

int bz_error_status(int err)
{
    if (err == 0)
        return 200;
    const struct bz__error_row *row = bz__error_find(err);
    return row ? row->status : 500;
}

int bz_error_from_status(int status)
{
    for (unsigned i = 0; i < sizeof bz__errors / sizeof bz__errors[0]; i++)
        if (bz__errors[i].status == status)
            return bz__errors[i].code;
    return BZ_EINTERNAL;
}
