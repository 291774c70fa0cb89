/*
 * lseek(SEEK_DATA / SEEK_HOLE) for Node, as a Node-API addon (ABI-stable across Node versions, so
 * the same binary loads in Node 20 and in VS Code's extension host). QEMU's qcow2 driver asks the
 * host file where its holes are when it detects metadata preallocation, and `qemu-img map` reports
 * those holes as zero; Node's fs has no way to ask, hence this one small function.
 *
 * Also compaction's copy path, both asynchronous (libuv's thread pool, a promise each):
 *  - copyRange(fdIn, offIn, fdOut, offOut, len): copy_file_range(2) in a loop, so the kernel moves
 *    the bytes file to file with no user-space copy (a reflink where the file system shares
 *    extents). Resolves with the bytes copied (fewer only where the source ends); rejects with an
 *    Error carrying `code` (EXDEV, ENOSYS, EOPNOTSUPP, EINVAL, …) and `done` (bytes copied before).
 *  - zeroScan(fd, off, n, cs, mask): marks in `mask` (a Uint8Array of n) each of the n clusters of
 *    cs bytes from `off` that reads as all zero: its first 512 bytes are read and scanned a word
 *    at a time; only when they are all zero is the rest of the cluster read and scanned. Bytes past
 *    the end of the file read as zero.
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>
#include <node_api.h>

/* seek(fd, offset, whence): the resulting offset, or -1 when there is no more data (ENXIO). */
static napi_value do_seek(napi_env env, napi_callback_info info, int whence) {
  size_t argc = 2;
  napi_value argv[2], out;
  int32_t fd;
  double offset;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_double(env, argv[1], &offset) != napi_ok || offset < 0) {
    napi_throw_type_error(env, NULL, "expected (fd, offset)");
    return NULL;
  }
  off_t r = lseek(fd, (off_t)offset, whence);
  if (r < 0) {
    if (errno == ENXIO) {
      napi_create_double(env, -1, &out);
      return out;
    }
    napi_throw_error(env, NULL, strerror(errno));
    return NULL;
  }
  napi_create_double(env, (double)r, &out);
  return out;
}

static napi_value seek_data(napi_env env, napi_callback_info info) { return do_seek(env, info, SEEK_DATA); }
static napi_value seek_hole(napi_env env, napi_callback_info info) { return do_seek(env, info, SEEK_HOLE); }


/* ── asynchronous work: one job struct for both functions ── */

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref mask_ref;
  int kind; /* 0: copy, 1: zero scan */
  int fd_in, fd_out;
  int64_t off_in, off_out, len; /* copy: bytes; scan: len = clusters */
  int64_t cs;
  uint8_t *mask;
  int64_t done;
  int err;
} job_t;

static const char *errno_code(int e) {
  switch (e) {
    case EXDEV: return "EXDEV";
    case ENOSYS: return "ENOSYS";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EINVAL: return "EINVAL";
    case EBADF: return "EBADF";
    case EIO: return "EIO";
    case ENOSPC: return "ENOSPC";
    case EFBIG: return "EFBIG";
    case EPERM: return "EPERM";
    case ETXTBSY: return "ETXTBSY";
    case EOVERFLOW: return "EOVERFLOW";
    case EISDIR: return "EISDIR";
    case EDQUOT: return "EDQUOT";
    default: return "EUNKNOWN";
  }
}

/* all zero? a word at a time (8 words per step), the tail a byte at a time */
static int all_zero(const uint8_t *p, size_t n) {
  size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    uint64_t w[8];
    memcpy(w, p + i, 64);
    if (w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]) return 0;
  }
  for (; i < n; i++) if (p[i]) return 0;
  return 1;
}

/* pread until n bytes or the end of the file; the rest of buf is zeroed. -1 on error. */
static ssize_t pread_full(int fd, uint8_t *buf, size_t n, off_t off) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = pread(fd, buf + got, n - got, off + (off_t)got);
    if (r < 0) { if (errno == EINTR) continue; return -1; }
    if (r == 0) { memset(buf + got, 0, n - got); break; }
    got += (size_t)r;
  }
  return (ssize_t)got;
}

#define PROBE 512
#define SCAN_CHUNK 65536

static void execute(napi_env env, void *data) {
  (void)env;
  job_t *j = data;
  if (j->kind == 0) {
    loff_t in = j->off_in, out = j->off_out;
    while (j->done < j->len) {
      ssize_t r = copy_file_range(j->fd_in, &in, j->fd_out, &out, (size_t)(j->len - j->done), 0);
      if (r < 0) { if (errno == EINTR) continue; j->err = errno; return; }
      if (r == 0) return; /* the source ends */
      j->done += r;
    }
    return;
  }
  uint8_t probe[PROBE];
  uint8_t *chunk = NULL;
  for (int64_t c = 0; c < j->len; c++) {
    off_t at = (off_t)(j->off_in + c * j->cs);
    size_t first = j->cs < PROBE ? (size_t)j->cs : PROBE;
    if (pread_full(j->fd_in, probe, first, at) < 0) { j->err = errno; break; }
    if (!all_zero(probe, first)) { j->mask[c] = 0; continue; }
    int zero = 1;
    for (int64_t pos = first; zero && pos < j->cs;) {
      size_t n = (size_t)(j->cs - pos < SCAN_CHUNK ? j->cs - pos : SCAN_CHUNK);
      if (!chunk && !(chunk = malloc(SCAN_CHUNK))) { j->err = ENOMEM; break; }
      if (pread_full(j->fd_in, chunk, n, at + (off_t)pos) < 0) { j->err = errno; break; }
      zero = all_zero(chunk, n);
      pos += (int64_t)n;
    }
    if (j->err) break;
    j->mask[c] = (uint8_t)zero;
  }
  free(chunk);
}

static void complete(napi_env env, napi_status status, void *data) {
  job_t *j = data;
  napi_value v;
  if (status != napi_ok && !j->err) j->err = EIO;
  if (j->err) {
    napi_value msg, code, done, err;
    napi_create_string_utf8(env, strerror(j->err), NAPI_AUTO_LENGTH, &msg);
    napi_create_string_utf8(env, errno_code(j->err), NAPI_AUTO_LENGTH, &code);
    napi_create_error(env, code, msg, &err);
    napi_set_named_property(env, err, "code", code);
    napi_create_double(env, (double)j->done, &done);
    napi_set_named_property(env, err, "done", done);
    napi_reject_deferred(env, j->deferred, err);
  } else {
    napi_create_double(env, (double)j->done, &v);
    napi_resolve_deferred(env, j->deferred, v);
  }
  if (j->mask_ref) napi_delete_reference(env, j->mask_ref);
  napi_delete_async_work(env, j->work);
  free(j);
}

static napi_value start(napi_env env, job_t *j, const char *name) {
  napi_value promise, res;
  napi_create_promise(env, &j->deferred, &promise);
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &res);
  napi_create_async_work(env, NULL, res, execute, complete, j, &j->work);
  napi_queue_async_work(env, j->work);
  return promise;
}

static int get_i64(napi_env env, napi_value v, int64_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || d < 0 || d > 9007199254740992.0 || d != (double)(int64_t)d) return 0;
  *out = (int64_t)d;
  return 1;
}

/* copyRange(fdIn, offIn, fdOut, offOut, len) → Promise<bytes copied> */
static napi_value copy_range(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  job_t *j = calloc(1, sizeof *j);
  if (!j) { napi_throw_error(env, NULL, "out of memory"); return NULL; }
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5 ||
      napi_get_value_int32(env, argv[0], &j->fd_in) != napi_ok || !get_i64(env, argv[1], &j->off_in) ||
      napi_get_value_int32(env, argv[2], &j->fd_out) != napi_ok || !get_i64(env, argv[3], &j->off_out) ||
      !get_i64(env, argv[4], &j->len)) {
    free(j);
    napi_throw_type_error(env, NULL, "expected (fdIn, offIn, fdOut, offOut, len)");
    return NULL;
  }
  return start(env, j, "copyRange");
}

/* zeroScan(fd, off, n, cs, mask) → Promise<0> */
static napi_value zero_scan(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_typedarray_type type;
  size_t length;
  void *ptr;
  job_t *j = calloc(1, sizeof *j);
  if (!j) { napi_throw_error(env, NULL, "out of memory"); return NULL; }
  j->kind = 1;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5 ||
      napi_get_value_int32(env, argv[0], &j->fd_in) != napi_ok || !get_i64(env, argv[1], &j->off_in) ||
      !get_i64(env, argv[2], &j->len) || !get_i64(env, argv[3], &j->cs) || j->cs < 1 ||
      napi_get_typedarray_info(env, argv[4], &type, &length, &ptr, NULL, NULL) != napi_ok ||
      type != napi_uint8_array || (int64_t)length < j->len) {
    free(j);
    napi_throw_type_error(env, NULL, "expected (fd, offset, clusters, clusterSize, Uint8Array mask)");
    return NULL;
  }
  j->mask = ptr;
  napi_create_reference(env, argv[4], 1, &j->mask_ref);
  return start(env, j, "zeroScan");
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "seekData", NAPI_AUTO_LENGTH, seek_data, NULL, &fn);
  napi_set_named_property(env, exports, "seekData", fn);
  napi_create_function(env, "seekHole", NAPI_AUTO_LENGTH, seek_hole, NULL, &fn);
  napi_set_named_property(env, exports, "seekHole", fn);
  napi_create_function(env, "copyRange", NAPI_AUTO_LENGTH, copy_range, NULL, &fn);
  napi_set_named_property(env, exports, "copyRange", fn);
  napi_create_function(env, "zeroScan", NAPI_AUTO_LENGTH, zero_scan, NULL, &fn);
  napi_set_named_property(env, exports, "zeroScan", fn);
  return exports;
}
