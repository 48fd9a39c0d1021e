/*
 * error.h - the one list of error codes used by every Stock Bazaar module.
 *
 * Functions return 0 on success or a negative BZ_E* code. The list below is
 * an X-macro so the enum, the default message and the HTTP status that a
 * code maps to are written exactly once. Human-readable detail belongs in an
 * errmsg buffer owned by the caller, never in a global.
 */
#ifndef BZ_ERROR_H
#define BZ_ERROR_H

/* X(name, http status, default message) */
#define BZ_ERROR_MAP(X)                                                                            \
    X(EINVAL, 400, "bad request")                                                                  \
    X(EAUTH, 401, "missing or wrong cluster secret")                                               \
    X(ENOTFOUND, 404, "not found")                                                                 \
    X(EMETHOD, 405, "method not allowed")                                                          \
    X(ENOTLEADER, 421, "this replica is not the leader")                                           \
    X(ECONFLICT, 409, "conflict")                                                                  \
    X(ESTALE, 409, "stale epoch")                                                                  \
    X(ELENGTH, 411, "Content-Length required")                                                     \
    X(ETOOBIG, 413, "request body too large")                                                      \
    X(EURI, 414, "request target too long")                                                        \
    X(EHEADERS, 431, "request header fields too large")                                            \
    X(EMISMATCH, 422, "Idempotency-Key reused with a different request")                           \
    X(EINTERNAL, 500, "internal error")                                                            \
    X(ENOTIMPL, 501, "not implemented")                                                            \
    X(EUPSTREAM, 502, "bad reply from an internal service")                                        \
    X(EUNAVAIL, 503, "service unavailable")                                                        \
    X(ETIMEDOUT, 504, "internal call timed out")                                                   \
    X(EIO, 500, "storage error")                                                                   \
    X(ENOMEM, 500, "out of memory")

/* Codes are negative and distinct from 0 (success). */
enum bz_error {
    BZ_OK = 0,
    BZ__ERROR_BASE = -1000,
#define BZ__ENUM(name, status, msg) BZ_##name,
    BZ_ERROR_MAP(BZ__ENUM)
#undef BZ__ENUM
};

/* Default message for a code; "ok" for 0 and "unknown error" for codes not in the list. */
const char *bz_strerror(int err);

/* HTTP status for a code: 200 for 0, 500 for codes not in the list. */
int bz_error_status(int err);

/* The code whose status is `status` (first in the list); BZ_EINTERNAL when none. */
int bz_error_from_status(int status);

#endif
