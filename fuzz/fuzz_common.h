/* Shared by the fuzz harnesses, the seed generator and tests/test_fuzz_replay.c: a byte reader,
 * the "directory archive" input format, and one private scratch directory per process. */
#ifndef FM_FUZZ_COMMON_H
#define FM_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* Every harness defines its entry point with FM_FUZZ_TARGET(fn): `fn` always exists (the
 * in-process replay test calls it); LLVMFuzzerTestOneInput forwards to it unless
 * FM_FUZZ_NO_ENTRY is defined (several harnesses compiled into one program). */
#ifdef FM_FUZZ_NO_ENTRY
#define FM_FUZZ_TARGET(fn)
#else
#define FM_FUZZ_TARGET(fn)                                                                         \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);                                  \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {                                 \
        return fn(data, size);                                                                     \
    }
#endif

/* Stops the process the way sanitizers do, so an oracle violation is a finding. `what` is
 * printed to stderr first (harness code, not library code). */
void fmz_fail(const char *what, const char *detail);

/* The harness's verdict on the current input: accepted (1) or rejected (0) by the library call
 * the harness is about (its table row in fuzz/README.md). Every harness reports exactly one
 * verdict per input that reaches that call; replays compare it with the seed's name (ok_* must
 * be accepted, bad_* rejected), so a parser that rejects everything cannot pass. */
void fmz_verdict(int accepted);
/* The verdict reported since the last take (1, 0), or -1 when none was; resets it. */
int fmz_take_verdict(void);
/* What a seed's file name expects: 1 for "ok_*", 0 for "bad_*", -1 for any other name. */
int fmz_expected_verdict(const char *file_name);

/* With FM_FUZZ_VERBOSE=1 in the environment, prints one line to stderr (seed debugging:
 * which step an input reaches and with which status); silent otherwise. */
void fmz_note(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* Sequential reader over the input; reads past the end give zeros. Borrowed bytes. */
typedef struct fmz_reader {
    const uint8_t *p;
    size_t n;
} fmz_reader;
uint8_t fmz_u8(fmz_reader *r);
uint32_t fmz_u32(fmz_reader *r);

/* ---- directory archive ---------------------------------------------------------------------
 * A model directory as one input: records [name length: 1 byte][name][data length: u32 LE]
 * [data], repeated; a data length past the end is clamped to what is left. Names are
 * sanitised when written (see fmz_sanitize_name): the input cannot escape the directory. */
#define FMZ_MAX_FILES 12
#define FMZ_MAX_NAME 64
typedef struct fmz_file {
    char name[FMZ_MAX_NAME + 1];
    const uint8_t *data; /* borrowed from the input */
    size_t len;
} fmz_file;
/* Splits the archive into at most `max` files; returns how many. Empty names are skipped. */
size_t fmz_archive_parse(const uint8_t *d, size_t n, fmz_file *files, size_t max);
/* Appends one record to *buf (malloc'd, grown; caller frees with free()). 0 or -1 on OOM. */
int fmz_archive_add(uint8_t **buf, size_t *len, const char *name, const void *data, size_t dlen);
/* Maps a name onto [A-Za-z0-9._-] (others become '_'), no leading '.', at most FMZ_MAX_NAME
 * bytes. Returns 0 when nothing usable is left. */
int fmz_sanitize_name(const char *in, size_t n, char out[FMZ_MAX_NAME + 1]);

/* ---- scratch space -------------------------------------------------------------------------
 * One directory per process, created on first use under $FM_FUZZ_TMP, else /dev/shm, else
 * $TMPDIR, else /tmp (removed at exit and by fmz_cleanup). Writes "<scratch>/<sub>" into buf;
 * returns 0, or -1 when the scratch dir cannot be made or buf is too small. */
int fmz_path(const char *sub, char *buf, size_t size);
/* Empties and recreates `dir` (a directory under the scratch dir). 0 or -1. */
int fmz_dir_fresh(const char *dir);
/* Removes a tree without following links; missing is fine. */
void fmz_rmtree(const char *path);
/* Writes every file into dir (names sanitised; a later duplicate replaces an earlier one). */
int fmz_write_files(const char *dir, const fmz_file *files, size_t n);
/* Removes the scratch directory now (also registered with atexit). */
void fmz_cleanup(void);

/* Reads every byte of [p, p + n) so ASan checks the whole range; returns a checksum that the
 * caller must consume (e.g. fmz_sink) so the loop is not optimised away. */
uint32_t fmz_touch(const void *p, size_t n);
void fmz_sink(uint32_t v);

#endif
