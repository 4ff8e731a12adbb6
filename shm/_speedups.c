/* The arena writer's per-record loops and a reader's plain get in C (issue 17): the twin
 * of shm/blocks.py.
 *
 * A block is BLOCK_HEADER (<IHHQ: total, key length, kind, version) + key + payload +
 * CRC (<I) + zero padding to 8 bytes (shm/layout.py); the key is the table's prefix
 * (codec.key_prefix) + the id's msgpack. hcrc is the CRC of header and key, crc goes on
 * over the payload. Every function here gives the bytes and facts shm/blocks.py's Python
 * functions give; where an input is not the plain case (a new table, a bytearray, an id
 * past 64 bits, a record too large...) it stops and lets the Python twin handle it, so
 * both raise the same errors. Little-endian only (setup.py builds it nowhere else).
 * flat_ids, at the end, is the engine's check of a bulk load's records (no block).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define HSIZE 16
#define KIND_RECORD 1
#define MAX_KEY 0xFFFF

/* --- CRC-32 (zlib's polynomial), slice-by-8: no zlib headers needed to build --- */

static uint32_t T[8][256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        T[0][i] = c;
    }
    for (int i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++) T[t][i] = T[0][T[t - 1][i] & 0xff] ^ (T[t - 1][i] >> 8);
}

static uint32_t crc32_update(uint32_t crc, const unsigned char *p, size_t n) {
    crc = ~crc;
    while (n >= 8) {
        uint32_t a, b;
        memcpy(&a, p, 4);
        memcpy(&b, p + 4, 4);
        a ^= crc;
        crc = T[7][a & 0xff] ^ T[6][(a >> 8) & 0xff] ^ T[5][(a >> 16) & 0xff] ^ T[4][a >> 24] ^
              T[3][b & 0xff] ^ T[2][(b >> 8) & 0xff] ^ T[1][(b >> 16) & 0xff] ^ T[0][b >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) crc = T[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* --- msgpack of an id (str or signed 64-bit int) and of unsigned ints --- */

typedef struct {
    const char *s; /* UTF-8 of a str id, NULL for an int */
    Py_ssize_t n;
    long long v;
    Py_ssize_t len; /* its msgpack's length */
} Id;

/* 0: parsed; 1: not the plain case (not an exact str/int, past 64 bits, a surrogate). */
static int id_parse(PyObject *rid, Id *id) {
    if (PyUnicode_CheckExact(rid)) {
        id->s = PyUnicode_AsUTF8AndSize(rid, &id->n);
        if (id->s == NULL) {
            PyErr_Clear();
            return 1;
        }
        id->len = id->n + (id->n < 32 ? 1 : id->n < 256 ? 2 : id->n < 65536 ? 3 : 5);
        return 0;
    }
    if (PyLong_CheckExact(rid)) {
        int ovf;
        long long v = PyLong_AsLongLongAndOverflow(rid, &ovf);
        if (ovf || (v == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return 1;
        }
        id->s = NULL;
        id->v = v;
        if (v >= 0)
            id->len = v < 128 ? 1 : v < 256 ? 2 : v < 65536 ? 3 : v <= 0xFFFFFFFFLL ? 5 : 9;
        else
            id->len = v >= -32 ? 1 : v >= -128 ? 2 : v >= -32768 ? 3 : v >= INT32_MIN ? 5 : 9;
        return 0;
    }
    return 1;
}

static unsigned char *put_be(unsigned char *p, unsigned char tag, uint64_t v, int n) {
    *p++ = tag;
    for (int i = n - 1; i >= 0; i--) *p++ = (unsigned char)(v >> (8 * i));
    return p;
}

static unsigned char *put_uint(unsigned char *p, uint64_t v) {
    if (v < 128) {
        *p++ = (unsigned char)v;
        return p;
    }
    if (v < 256) return put_be(p, 0xcc, v, 1);
    if (v < 65536) return put_be(p, 0xcd, v, 2);
    if (v <= 0xFFFFFFFFu) return put_be(p, 0xce, v, 4);
    return put_be(p, 0xcf, v, 8);
}

static unsigned char *put_id(unsigned char *p, const Id *id) {
    if (id->s != NULL) {
        Py_ssize_t n = id->n;
        if (n < 32)
            *p++ = (unsigned char)(0xa0 | n);
        else if (n < 256)
            p = put_be(p, 0xd9, (uint64_t)n, 1);
        else if (n < 65536)
            p = put_be(p, 0xda, (uint64_t)n, 2);
        else
            p = put_be(p, 0xdb, (uint64_t)n, 4);
        memcpy(p, id->s, (size_t)n);
        return p + n;
    }
    long long v = id->v;
    if (v >= 0) return put_uint(p, (uint64_t)v);
    if (v >= -32) {
        *p++ = (unsigned char)(v & 0xff);
        return p;
    }
    if (v >= -128) return put_be(p, 0xd0, (uint64_t)v, 1);
    if (v >= -32768) return put_be(p, 0xd1, (uint64_t)v, 2);
    if (v >= INT32_MIN) return put_be(p, 0xd2, (uint64_t)v, 4);
    return put_be(p, 0xd3, (uint64_t)v, 8);
}

/* Write one block at b (asize bytes); its CRCs into *hcrc, *crc. */
static void write_block(unsigned char *b, uint64_t seq, const char *prefix, Py_ssize_t plen,
                        const Id *id, const void *data, Py_ssize_t dlen, Py_ssize_t klen,
                        Py_ssize_t total, Py_ssize_t asize, uint32_t *hcrc, uint32_t *crc) {
    uint32_t t32 = (uint32_t)total;
    uint16_t k16 = (uint16_t)klen, kind = KIND_RECORD;
    memcpy(b, &t32, 4);
    memcpy(b + 4, &k16, 2);
    memcpy(b + 6, &kind, 2);
    memcpy(b + 8, &seq, 8);
    memcpy(b + HSIZE, prefix, (size_t)plen);
    put_id(b + HSIZE + plen, id);
    *hcrc = crc32_update(0, b, (size_t)(HSIZE + klen));
    memcpy(b + HSIZE + klen, data, (size_t)dlen);
    *crc = crc32_update(*hcrc, (const unsigned char *)data, (size_t)dlen);
    memcpy(b + HSIZE + klen + dlen, crc, 4);
    memset(b + total, 0, (size_t)(asize - total));
}

/* --- prepare(puts, start, seq, prefixes, limit, out) -> (stop, need, estimate) --- */

/* A version outside the signed 64-bit range: the writer checks it first; this is the
 * twin's struct.error (a "q" field) for a direct call. */
static PyObject *bad_seq(void) {
    PyErr_SetString(PyExc_OverflowError, "seq outside the signed 64-bit range");
    return NULL;
}

/* One put of prepare(): 1: its 7-tuple appended to out; 0: the Python side must take
 * it; -1: an error. The caller holds put. */
static int prepare_one(PyObject *put, long long seq, PyObject *prefixes,
                       Py_ssize_t limit, PyObject *out, long long *need,
                       long long *estimate) {
    PyObject *t = PyTuple_GET_ITEM(put, 0), *rid = PyTuple_GET_ITEM(put, 1);
    PyObject *data = PyTuple_GET_ITEM(put, 2);
    if (!PyBytes_CheckExact(data) || !PyUnicode_CheckExact(t)) return 0;
    Py_ssize_t dlen = PyBytes_GET_SIZE(data);
    if (dlen > limit) return 0;
    PyObject *prefix = PyDict_GetItemWithError(prefixes, t); /* borrowed */
    if (prefix == NULL) {
        if (PyErr_Occurred()) return -1;
        return 0; /* a table not seen yet: the Python side checks and adds it */
    }
    Id id;
    if (!PyBytes_CheckExact(prefix) || id_parse(rid, &id)) return 0;
    Py_ssize_t plen = PyBytes_GET_SIZE(prefix), klen = plen + id.len;
    Py_ssize_t total = HSIZE + klen + dlen + 4, asize = (total + 7) & ~(Py_ssize_t)7;
    if (klen > MAX_KEY || total > 0xFFFFFFFFLL) return 0;
    PyObject *block = PyBytes_FromStringAndSize(NULL, asize);
    if (block == NULL) return -1;
    uint32_t hcrc, crc;
    write_block((unsigned char *)PyBytes_AS_STRING(block), seq, PyBytes_AS_STRING(prefix),
                plen, &id, PyBytes_AS_STRING(data), dlen, klen, total, asize, &hcrc, &crc);
    PyObject *tup = PyTuple_New(7);
    if (tup == NULL) {
        Py_DECREF(block);
        return -1;
    }
    Py_INCREF(t);
    Py_INCREF(rid);
    PyTuple_SET_ITEM(tup, 0, t);
    PyTuple_SET_ITEM(tup, 1, rid);
    PyTuple_SET_ITEM(tup, 2, block);
    PyObject *k = PyLong_FromSsize_t(klen), *d = PyLong_FromSsize_t(dlen);
    PyObject *h = PyLong_FromUnsignedLong(hcrc), *c = PyLong_FromUnsignedLong(crc);
    PyTuple_SET_ITEM(tup, 3, k);
    PyTuple_SET_ITEM(tup, 4, d);
    PyTuple_SET_ITEM(tup, 5, h);
    PyTuple_SET_ITEM(tup, 6, c);
    int err = !k || !d || !h || !c || PyList_Append(out, tup);
    Py_DECREF(tup);
    if (err) return -1;
    *need += asize;
    *estimate += (dlen + 64 + 7) & ~7LL;
    return 1;
}

static PyObject *prepare(PyObject *self, PyObject *args) {
    PyObject *puts, *prefixes, *out;
    Py_ssize_t start, limit, i;
    long long seq;
    long long need = 0, estimate = 0;
    if (!PyArg_ParseTuple(args, "O!nLO!nO!", &PyList_Type, &puts, &start, &seq, &PyDict_Type,
                          &prefixes, &limit, &PyList_Type, &out))
        return NULL;
    if (seq < 0) return bad_seq();
    /* puts is re-measured every round and each put held by a strong reference while it
     * is used: a dict lookup (a key's __eq__) or an allocation (a GC finalizer) can run
     * Python code that changes the list (review: a use-after-free otherwise). */
    for (i = start < 0 ? 0 : start; i < PyList_GET_SIZE(puts); i++) {
        PyObject *put = PyList_GET_ITEM(puts, i);
        if (!PyTuple_CheckExact(put) || PyTuple_GET_SIZE(put) != 3) break;
        Py_INCREF(put);
        int res = prepare_one(put, seq, prefixes, limit, out, &need, &estimate);
        Py_DECREF(put);
        if (res < 0) return NULL;
        if (res == 0) break;
    }
    return Py_BuildValue("(nLL)", i, need, estimate);
}

/* --- measure(ids, datas, plen, raw_type) -> (size, kmax, kmax_i, dmax, dmax_i) | None --- */

static int data_len(PyObject *d, PyObject *raw_type, Py_ssize_t *len) {
    if (PyBytes_CheckExact(d)) {
        *len = PyBytes_GET_SIZE(d);
        return 0;
    }
    if ((PyObject *)Py_TYPE(d) != raw_type) return 1;
    Py_buffer view;
    if (PyObject_GetBuffer(d, &view, PyBUF_SIMPLE) < 0) return -1;
    *len = view.len;
    PyBuffer_Release(&view);
    return 0;
}

static PyObject *measure(PyObject *self, PyObject *args) {
    PyObject *ids, *datas, *raw_type;
    Py_ssize_t plen, i, n, kmax = -1, kmax_i = 0, dmax = -1, dmax_i = 0;
    long long size = 0;
    if (!PyArg_ParseTuple(args, "O!O!nO", &PyList_Type, &ids, &PyList_Type, &datas, &plen,
                          &raw_type))
        return NULL;
    n = PyList_GET_SIZE(ids);
    if (PyList_GET_SIZE(datas) != n) {
        PyErr_SetString(PyExc_ValueError, "ids and datas differ in length");
        return NULL;
    }
    for (i = 0; i < n; i++) {
        Id id;
        Py_ssize_t dlen;
        if (id_parse(PyList_GET_ITEM(ids, i), &id)) Py_RETURN_NONE;
        int r = data_len(PyList_GET_ITEM(datas, i), raw_type, &dlen);
        if (r < 0) return NULL;
        if (r) Py_RETURN_NONE;
        Py_ssize_t klen = plen + id.len;
        if (klen > kmax) kmax = klen, kmax_i = i;
        if (dlen > dmax) dmax = dlen, dmax_i = i;
        size += (HSIZE + klen + dlen + 4 + 7) & ~7LL;
    }
    return Py_BuildValue("(Lnnnn)", size, kmax, kmax_i, dmax, dmax_i);
}

/* --- place(mm, off, seq, prefix, ids, datas, i, j, tdict, cols, raw_type) -> (off, rows) ---
 * Writes the blocks of records i..j-1 from off on, indexes them (tdict: id -> pos, the
 * record's index; cols, int64s: off, pstart, pend, hcrc, crc at 5 * pos: the writer's
 * compact index of a load, shm/writer.py _Cols) and returns the next offset and their
 * checkpoint rows' msgpack, [id, pstart, pend, hcrc, crc, pos, off] each, back to back.
 * The records are ones measure() accepted. */

static PyObject *place(PyObject *self, PyObject *args) {
    PyObject *mm, *prefix, *all_ids, *all_datas, *tdict, *colso, *raw_type;
    PyObject *ids = NULL, *datas = NULL, *rows = NULL;
    Py_ssize_t off, i, j;
    long long seq;
    Py_buffer view, cv;
    if (!PyArg_ParseTuple(args, "OnLO!O!O!nnO!OO", &mm, &off, &seq, &PyBytes_Type, &prefix,
                          &PyList_Type, &all_ids, &PyList_Type, &all_datas, &i, &j, &PyDict_Type,
                          &tdict, &colso, &raw_type))
        return NULL;
    if (seq < 0) return bad_seq();
    if (i < 0 || j > PyList_GET_SIZE(all_ids) || j > PyList_GET_SIZE(all_datas) || i > j) {
        PyErr_SetString(PyExc_IndexError, "place: records out of range");
        return NULL;
    }
    if (off < 0) {
        PyErr_SetString(PyExc_ValueError, "place: a block past the mapping or too large");
        return NULL;
    }
    if (PyObject_GetBuffer(mm, &view, PyBUF_WRITABLE) < 0) {
        if (PyErr_ExceptionMatches(PyExc_BufferError)) /* read-only: what a slice */
            PyErr_SetString(PyExc_TypeError, "place: the mapping must be a writable buffer");
        return NULL; /* assignment raises in Python; a closed mmap keeps its ValueError */
    }
    if (PyObject_GetBuffer(colso, &cv, PyBUF_WRITABLE | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    if (cv.itemsize != 8 || cv.format == NULL || strcmp(cv.format, "q") != 0 ||
        cv.len / 8 < 5 * j) {
        PyBuffer_Release(&cv);
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "place: cols must be int64s, 5 a record");
        return NULL;
    }
    int64_t *cols = (int64_t *)cv.buf;
    /* Private copies of the chunk's lists: a GC finalizer run by an allocation below
     * could change the caller's, and the rows' size is computed from these (review). */
    ids = PyList_GetSlice(all_ids, i, j);
    datas = PyList_GetSlice(all_datas, i, j);
    if (ids == NULL || datas == NULL) goto fail;
    const char *pfx = PyBytes_AS_STRING(prefix);
    Py_ssize_t plen = PyBytes_GET_SIZE(prefix);
    /* a row is at most fixarray + id + 6 uint64s */
    Py_ssize_t cap = 0;
    for (Py_ssize_t r = 0; r < j - i; r++) {
        Id id;
        if (id_parse(PyList_GET_ITEM(ids, r), &id)) {
            PyErr_SetString(PyExc_TypeError, "place: an id measure() would not take");
            goto fail;
        }
        cap += 1 + id.len + 6 * 9;
    }
    rows = PyBytes_FromStringAndSize(NULL, cap);
    if (rows == NULL) goto fail;
    unsigned char *w = (unsigned char *)PyBytes_AS_STRING(rows);
    for (Py_ssize_t r = 0; r < j - i; r++) {
        Id id;
        Py_buffer dv;
        PyObject *rid = PyList_GET_ITEM(ids, r), *d = PyList_GET_ITEM(datas, r);
        if (id_parse(rid, &id)) {
            PyErr_SetString(PyExc_TypeError, "place: an id measure() would not take");
            goto fail;
        }
        if (!PyBytes_CheckExact(d) && (PyObject *)Py_TYPE(d) != raw_type) {
            PyErr_SetString(PyExc_TypeError, "place: record data measure() would not take");
            goto fail;
        }
        if (PyObject_GetBuffer(d, &dv, PyBUF_SIMPLE) < 0) goto fail;
        Py_ssize_t klen = plen + id.len, dlen = dv.len;
        Py_ssize_t total = HSIZE + klen + dlen + 4, asize = (total + 7) & ~(Py_ssize_t)7;
        if (klen > MAX_KEY || total > 0xFFFFFFFFLL || off > view.len || asize > view.len - off) {
            PyBuffer_Release(&dv);
            PyErr_SetString(PyExc_ValueError, "place: a block past the mapping or too large");
            goto fail;
        }
        uint32_t hcrc, crc;
        write_block((unsigned char *)view.buf + off, seq, pfx, plen, &id, dv.buf, dlen, klen,
                    total, asize, &hcrc, &crc);
        PyBuffer_Release(&dv);
        Py_ssize_t pstart = off + HSIZE + klen, pend = pstart + dlen;
        /* the index: id -> pos, its fields in cols (a tuple and six ints a record were
         * ~80k of a start's ~96k page faults for 10^6 records) */
        int64_t *c = cols + 5 * (i + r);
        c[0] = off, c[1] = pstart, c[2] = pend, c[3] = hcrc, c[4] = crc;
        PyObject *e = PyLong_FromSsize_t(i + r);
        if (e == NULL || PyDict_SetItem(tdict, rid, e) < 0) {
            Py_XDECREF(e);
            goto fail;
        }
        Py_DECREF(e);
        *w++ = 0x97; /* fixarray of 7 */
        w = put_id(w, &id);
        w = put_uint(w, (uint64_t)pstart);
        w = put_uint(w, (uint64_t)pend);
        w = put_uint(w, hcrc);
        w = put_uint(w, crc);
        w = put_uint(w, (uint64_t)(i + r));
        w = put_uint(w, (uint64_t)off);
        off += asize;
    }
    PyBuffer_Release(&cv);
    PyBuffer_Release(&view);
    Py_DECREF(ids);
    Py_DECREF(datas);
    if (_PyBytes_Resize(&rows, (Py_ssize_t)(w - (unsigned char *)PyBytes_AS_STRING(rows))) < 0)
        return NULL;
    return Py_BuildValue("(nN)", off, rows);
fail:
    PyBuffer_Release(&cv);
    PyBuffer_Release(&view);
    Py_XDECREF(ids);
    Py_XDECREF(datas);
    Py_XDECREF(rows);
    return NULL;
}

/* --- ReaderCore: an ArenaReader's plain get in one C call ---
 * The base class of ArenaReader on the compiled path (its Python twin: blocks.ReaderCorePy).
 * It holds what a get reads: _seq (the version the local index is at), _idx (table -> id
 * -> entry), _gmm (the generation's mapping) as plain members the Python code assigns, and
 * a buffer on the control mapping for the seq word. _get_c(table, id) does what the
 * Python get does: seq word check, two dict lookups, the payload copied out, its CRC
 * (seeded with the entry's header CRC) over the copy, then msgpack's unpackb of the copy;
 * anything else goes back to Python: a seq word past _seq (or not attached) to
 * self._get_sync(table, id), an entry that is damaged or does not validate to
 * self._get_retried(table, id). Measured (CPU time, 100k records of 97 B): the Python
 * get's frame, attribute loads and the 5-argument valid() call were ~0.2 us of ~1.17 us. */

typedef struct {
    PyObject_HEAD
    long long seq;
    char plain; /* _get_for may call the C get (else self.get: a fault switch, a codec) */
    PyObject *idx;
    PyObject *gmm;
    PyObject *unpackb; /* msgpack.unpackb, called with strict_map_key=False */
    Py_buffer ctl;     /* held on the control mapping while seqp != NULL */
    const uint64_t *seqp;
} Core;

static PyObject *kw_strict;  /* ("strict_map_key",) */
static PyObject *s_get_sync; /* "_get_sync" */
static PyObject *s_get_retried;
static PyObject *s_get; /* "get" */
static PyObject *stale; /* STALE: _get_for's "ask elsewhere" */

static void core_release_ctl(Core *self) {
    if (self->seqp != NULL) {
        self->seqp = NULL;
        PyBuffer_Release(&self->ctl);
    }
}

static int core_traverse(Core *self, visitproc visit, void *arg) {
    Py_VISIT(self->idx);
    Py_VISIT(self->gmm);
    Py_VISIT(self->unpackb);
    if (self->seqp != NULL) Py_VISIT(self->ctl.obj);
    return 0;
}

static int core_clear(Core *self) {
    core_release_ctl(self);
    Py_CLEAR(self->idx);
    Py_CLEAR(self->gmm);
    Py_CLEAR(self->unpackb);
    return 0;
}

static void core_dealloc(Core *self) {
    PyObject_GC_UnTrack(self);
    core_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* _core_attach(ctl, off, unpackb): read the seq word at ctl[off:off+8] (aligned). */
static PyObject *core_attach(Core *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "_core_attach(ctl, off, unpackb)");
        return NULL;
    }
    Py_ssize_t off = PyLong_AsSsize_t(args[1]);
    if (off == -1 && PyErr_Occurred()) return NULL;
    if (!PyCallable_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "_core_attach: unpackb must be callable");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    if (off < 0 || view.len < 8 || off > view.len - 8 ||
        ((uintptr_t)view.buf + (size_t)off) % 8 != 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "_core_attach: the seq word is outside the mapping");
        return NULL;
    }
    core_release_ctl(self);
    self->ctl = view;
    self->seqp = (const uint64_t *)((const char *)view.buf + off);
    Py_INCREF(args[2]);
    Py_XSETREF(self->unpackb, args[2]);
    Py_RETURN_NONE;
}

/* _core_release(): let the control mapping close (idempotent); later gets go to Python. */
static PyObject *core_release(Core *self, PyObject *unused) {
    core_release_ctl(self);
    Py_RETURN_NONE;
}

static PyObject *core_hook(Core *self, PyObject *name, PyObject *table, PyObject *rid) {
    PyObject *stack[3] = {(PyObject *)self, table, rid};
    return PyObject_VectorcallMethod(name, stack, 3, NULL);
}

/* An entry's payload bounds and CRCs; 0 when it is not 4 (or more) exact ints in range
 * (a damaged entry: the Python code retries, as valid() returning None makes it). */
static int entry_parse(PyObject *e, Py_ssize_t *start, Py_ssize_t *end, uint32_t *hcrc,
                       uint32_t *crc) {
    if (!PyTuple_CheckExact(e) || PyTuple_GET_SIZE(e) < 4) return 0;
    PyObject *f[4];
    for (int k = 0; k < 4; k++) {
        f[k] = PyTuple_GET_ITEM(e, k);
        if (!PyLong_CheckExact(f[k])) return 0;
    }
    *start = PyLong_AsSsize_t(f[0]);
    *end = PyLong_AsSsize_t(f[1]);
    /* unsigned long (>= 32 bits everywhere), not unsigned long long: on CPython 3.11 the
     * latter goes through _PyLong_AsByteArray, ~120 instructions a call (callgrind) */
    unsigned long h = PyLong_AsUnsignedLong(f[2]);
    unsigned long c = PyLong_AsUnsignedLong(f[3]);
    if (PyErr_Occurred()) { /* past Py_ssize_t or unsigned long, or negative CRCs */
        PyErr_Clear();
        return 0;
    }
    if (h > 0xFFFFFFFFUL || c > 0xFFFFFFFFUL) return 0;
    *hcrc = (uint32_t)h;
    *crc = (uint32_t)c;
    return 1;
}

static PyObject *core_get_impl(Core *self, PyObject *table, PyObject *rid) {
    if (self->seqp == NULL || self->unpackb == NULL || self->idx == NULL ||
        !PyDict_CheckExact(self->idx) ||
        __atomic_load_n(self->seqp, __ATOMIC_ACQUIRE) != (uint64_t)self->seq)
        return core_hook(self, s_get_sync, table, rid);
    /* A lookup can run Python code (a key's __eq__): everything used after one is held
     * by a strong reference. */
    PyObject *idx = self->idx, *t, *e, *mm, *raw, *unpackb, *res;
    Py_INCREF(idx);
    t = PyDict_GetItemWithError(idx, table);
    Py_XINCREF(t);
    Py_DECREF(idx);
    if (t == NULL || t == Py_None) {
        Py_XDECREF(t);
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    if (!PyDict_CheckExact(t)) {
        Py_DECREF(t);
        return core_hook(self, s_get_sync, table, rid);
    }
    e = PyDict_GetItemWithError(t, rid);
    Py_XINCREF(e);
    Py_DECREF(t);
    if (e == NULL || e == Py_None) {
        Py_XDECREF(e);
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    Py_ssize_t start, end;
    uint32_t hcrc, crc;
    int ok = entry_parse(e, &start, &end, &hcrc, &crc);
    Py_DECREF(e);
    if (!ok) return core_hook(self, s_get_retried, table, rid);
    mm = self->gmm;
    if (mm == NULL) mm = Py_None;
    Py_INCREF(mm);
    Py_buffer view;
    int got = PyObject_GetBuffer(mm, &view, PyBUF_SIMPLE);
    Py_DECREF(mm); /* the buffer export holds the mapping (mmap.close() refuses) */
    if (got < 0) return NULL;
    if (start < 0 || end < start || end > view.len) {
        PyBuffer_Release(&view);
        return core_hook(self, s_get_retried, table, rid);
    }
    raw = PyBytes_FromStringAndSize((const char *)view.buf + start, end - start);
    PyBuffer_Release(&view);
    if (raw == NULL) return NULL;
    if (crc32_update(hcrc, (const unsigned char *)PyBytes_AS_STRING(raw),
                     (size_t)(end - start)) != crc) {
        Py_DECREF(raw);
        return core_hook(self, s_get_retried, table, rid);
    }
    unpackb = self->unpackb;
    Py_INCREF(unpackb);
    PyObject *argv[2] = {raw, Py_False};
    res = PyObject_Vectorcall(unpackb, argv, 1, kw_strict);
    Py_DECREF(unpackb);
    Py_DECREF(raw);
    return res;
}

static PyObject *core_get(Core *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "get(table, id)");
        return NULL;
    }
    return core_get_impl(self, args[0], args[1]);
}

/* time.monotonic(), the same double: on Linux CPython reads CLOCK_MONOTONIC (then
 * _PyTime_AsSecondsDouble of the ns); elsewhere (macOS: mach_absolute_time) it is called.
 * -1.0 with an exception set if that call failed. */
static PyObject *py_monotonic; /* time.monotonic, off Linux */

static double monotonic_now(void) {
#if defined(__linux__)
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long long ns = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    if (ns % 1000000000LL == 0) return (double)(ns / 1000000000LL);
    return (double)ns / 1e9;
#else
    PyObject *t = PyObject_CallNoArgs(py_monotonic);
    if (t == NULL) return -1.0;
    double d = PyFloat_AsDouble(t);
    Py_DECREF(t);
    return d;
#endif
}

/* _get_for(table, id, min_seq, deadline): STALE when this reader may not answer (its
 * index before min_seq, or time.monotonic() >= deadline), else what get(table, id) gives:
 * _get_c's C path when _plain (the default decode, no fault switch), else self.get.
 * Measured: the client's time.monotonic() call and its seq test cost ~0.07 us a get. */
static PyObject *core_get_for(Core *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "_get_for(table, id, min_seq, deadline)");
        return NULL;
    }
    int ovf;
    long long min_seq = PyLong_AsLongLongAndOverflow(args[2], &ovf);
    if (min_seq == -1 && PyErr_Occurred()) return NULL;
    double deadline = PyFloat_AsDouble(args[3]);
    if (deadline == -1.0 && PyErr_Occurred()) return NULL;
    if (ovf > 0 || (ovf == 0 && self->seq < min_seq)) {
        Py_INCREF(stale);
        return stale;
    }
    double now = monotonic_now();
    if (now == -1.0 && PyErr_Occurred()) return NULL;
    if (now >= deadline) {
        Py_INCREF(stale);
        return stale;
    }
    if (self->plain) return core_get_impl(self, args[0], args[1]);
    PyObject *stack[3] = {(PyObject *)self, args[0], args[1]};
    return PyObject_VectorcallMethod(s_get, stack, 3, NULL);
}

static PyMemberDef core_members[] = {
    {"_plain", T_BOOL, offsetof(Core, plain), 0, "_get_for may take the C get"},
    {"_seq", T_LONGLONG, offsetof(Core, seq), 0, "the version the local index is at"},
    {"_idx", T_OBJECT, offsetof(Core, idx), 0, "table -> id -> entry"},
    {"_gmm", T_OBJECT, offsetof(Core, gmm), 0, "the current generation's mapping"},
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef core_methods[] = {
    {"_get_c", (PyCFunction)(void (*)(void))core_get, METH_FASTCALL,
     "get(table, id): the plain get in one call (see shm/blocks.py ReaderCorePy._get_c)."},
    {"_get_for", (PyCFunction)(void (*)(void))core_get_for, METH_FASTCALL,
     "_get_for(table, id, min_seq, deadline): get, or STALE (see blocks.ReaderCorePy)."},
    {"_core_attach", (PyCFunction)(void (*)(void))core_attach, METH_FASTCALL,
     "Hold the control mapping for the seq word at off, and the decode."},
    {"_core_release", (PyCFunction)core_release, METH_NOARGS,
     "Release the control mapping (before it closes)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "stateengine.shm._speedups.ReaderCore",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "An ArenaReader's plain get in C (twin: shm/blocks.py ReaderCorePy).",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)core_dealloc,
    .tp_traverse = (traverseproc)core_traverse,
    .tp_clear = (inquiry)core_clear,
    .tp_members = core_members,
    .tp_methods = core_methods,
};

/* --- the engine's check of a bulk load of flat records (server/engine.py) ---
 *
 * flat_ids(records, fields, accepts): the records' ids when every record is an exact
 * dict whose keys are exactly *fields*, in that order (fields[0] the id), whose id
 * values are all exact ints or all exact strs, and whose value of field i (i >= 1) has
 * exactly one of the types in the tuple accepts[i]; else None. One pass over all
 * records instead of three C-level map passes (shm/blocks.py flat_ids is the twin). */

static PyObject *flat_ids(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyList_CheckExact(args[0]) || !PyTuple_CheckExact(args[1]) ||
        !PyTuple_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "flat_ids(list, tuple, tuple)");
        return NULL;
    }
    PyObject *records = args[0], *fields = args[1], *accepts = args[2];
    Py_ssize_t n = PyList_GET_SIZE(records), k = PyTuple_GET_SIZE(fields);
    if (k < 1 || PyTuple_GET_SIZE(accepts) != k) {
        PyErr_SetString(PyExc_TypeError, "flat_ids: one accepts tuple per field");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < k; i++) {
        if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(fields, i)) ||
            !PyTuple_CheckExact(PyTuple_GET_ITEM(accepts, i))) {
            PyErr_SetString(PyExc_TypeError, "flat_ids: fields are str, accepts tuples");
            return NULL;
        }
    }
    if (n == 0) Py_RETURN_NONE;
    PyObject *ids = PyList_New(n);
    if (ids == NULL) return NULL;
    PyTypeObject *id_type = NULL;
    for (Py_ssize_t r = 0; r < n; r++) {
        PyObject *rec = PyList_GET_ITEM(records, r);
        if (!PyDict_CheckExact(rec) || PyDict_GET_SIZE(rec) != k) goto no;
        Py_ssize_t pos = 0, i = 0;
        PyObject *key, *value;
        while (PyDict_Next(rec, &pos, &key, &value)) {
            PyObject *f = PyTuple_GET_ITEM(fields, i);
            if (key != f && (!PyUnicode_CheckExact(key) || PyUnicode_Compare(key, f) != 0))
                goto no;
            PyTypeObject *t = Py_TYPE(value);
            if (i == 0) {
                if (t != &PyLong_Type && t != &PyUnicode_Type) goto no;
                if (id_type == NULL)
                    id_type = t;
                else if (t != id_type)
                    goto no;
                Py_INCREF(value);
                PyList_SET_ITEM(ids, r, value);
            } else {
                PyObject *ok = PyTuple_GET_ITEM(accepts, i);
                Py_ssize_t m = PyTuple_GET_SIZE(ok), j = 0;
                while (j < m && PyTuple_GET_ITEM(ok, j) != (PyObject *)t) j++;
                if (j == m) goto no;
            }
            i++;
        }
    }
    return ids;
no:
    Py_DECREF(ids); /* the slots not set yet are NULL: the list's dealloc skips them */
    Py_RETURN_NONE;
}

/* --- rows(tdict, cols) -> bytes | None ---
 * The checkpoint rows' msgpack of every entry of a writer's table, [id, pstart, pend,
 * hcrc, crc, pos, off] each, back to back (no array header), in the dict's order: an entry
 * is a tuple (off, asize, pstart, pend, hcrc, crc, pos, version) or a loaded record's pos
 * in cols (int64s, 5 a record: off, pstart, pend, hcrc, crc; see place). None when an id
 * or an entry is not the plain case: the Python twin encodes (or raises) then. Rows built
 * as tuples and packed took 0.27 s a checkpoint of 10^6 records, ~35k page faults. */

static PyObject *rows(PyObject *self, PyObject *args) {
    static const int fields[6] = {2, 3, 4, 5, 6, 0};
    PyObject *tdict, *colso, *out = NULL, *k, *v;
    Py_buffer cv = {0};
    const int64_t *cols = NULL;
    Py_ssize_t ncols = 0, cap = 0, p = 0, n;
    Id id;
    if (!PyArg_ParseTuple(args, "O!O", &PyDict_Type, &tdict, &colso)) return NULL;
    if (colso != Py_None) {
        if (PyObject_GetBuffer(colso, &cv, PyBUF_FORMAT) < 0) return NULL;
        if (cv.itemsize != 8 || cv.format == NULL || strcmp(cv.format, "q") != 0) {
            PyBuffer_Release(&cv);
            PyErr_SetString(PyExc_ValueError, "rows: cols must be int64s, 5 a record");
            return NULL;
        }
        cols = (const int64_t *)cv.buf;
        ncols = cv.len / 40;
    }
    n = PyDict_GET_SIZE(tdict);
    while (PyDict_Next(tdict, &p, &k, &v)) {
        if (id_parse(k, &id)) goto none;
        cap += 1 + id.len + 6 * 9;
    }
    out = PyBytes_FromStringAndSize(NULL, cap);
    if (out == NULL) goto fail;
    /* nothing below runs Python code, but the allocation above could (a GC finalizer) */
    if (PyDict_GET_SIZE(tdict) != n) goto none;
    unsigned char *w = (unsigned char *)PyBytes_AS_STRING(out), *end = w + cap;
    p = 0;
    while (PyDict_Next(tdict, &p, &k, &v)) {
        uint64_t f[6];
        if (id_parse(k, &id)) goto none;
        if (PyLong_CheckExact(v)) {
            Py_ssize_t i = PyLong_AsSsize_t(v);
            if (i < 0 || i >= ncols) {
                PyErr_Clear();
                goto none;
            }
            const int64_t *c = cols + 5 * i;
            f[0] = (uint64_t)c[1], f[1] = (uint64_t)c[2], f[2] = (uint64_t)c[3];
            f[3] = (uint64_t)c[4], f[4] = (uint64_t)i, f[5] = (uint64_t)c[0];
        } else if (PyTuple_CheckExact(v) && PyTuple_GET_SIZE(v) == 8) {
            for (int q = 0; q < 6; q++) {
                PyObject *x = PyTuple_GET_ITEM(v, fields[q]);
                if (!PyLong_CheckExact(x)) goto none;
                f[q] = PyLong_AsUnsignedLongLong(x);
                if (f[q] == (uint64_t)-1 && PyErr_Occurred()) {
                    PyErr_Clear();
                    goto none;
                }
            }
        } else {
            goto none;
        }
        if (end - w < 1 + id.len + 6 * 9) goto none;
        *w++ = 0x97; /* fixarray of 7 */
        w = put_id(w, &id);
        for (int q = 0; q < 6; q++) w = put_uint(w, f[q]);
    }
    if (cols != NULL) PyBuffer_Release(&cv);
    if (_PyBytes_Resize(&out, (Py_ssize_t)(w - (unsigned char *)PyBytes_AS_STRING(out))) < 0)
        return NULL;
    return out;
none:
    if (cols != NULL) PyBuffer_Release(&cv);
    Py_XDECREF(out);
    Py_RETURN_NONE;
fail:
    if (cols != NULL) PyBuffer_Release(&cv);
    return NULL;
}

/* --- extents(tdict, cols) -> [(off, asize), ...] | None ---
 * The blocks of every entry of a writer's table (see rows): what a DROP retires. None for
 * an entry that is not the plain case (the Python twin then). Through C-level maps over
 * the compact entries it took 0.49 s for 10^6 loaded records, 0.14 s for tuples. */

static PyObject *extents(PyObject *self, PyObject *args) {
    PyObject *tdict, *colso, *out = NULL, *k, *v;
    Py_buffer cv = {0};
    const int64_t *cols = NULL;
    Py_ssize_t ncols = 0, p = 0, r = 0;
    if (!PyArg_ParseTuple(args, "O!O", &PyDict_Type, &tdict, &colso)) return NULL;
    if (colso != Py_None) {
        if (PyObject_GetBuffer(colso, &cv, PyBUF_FORMAT) < 0) return NULL;
        if (cv.itemsize != 8 || cv.format == NULL || strcmp(cv.format, "q") != 0) {
            PyBuffer_Release(&cv);
            PyErr_SetString(PyExc_ValueError, "extents: cols must be int64s, 5 a record");
            return NULL;
        }
        cols = (const int64_t *)cv.buf;
        ncols = cv.len / 40;
    }
    out = PyList_New(PyDict_GET_SIZE(tdict));
    if (out == NULL) goto fail;
    while (PyDict_Next(tdict, &p, &k, &v)) {
        PyObject *e;
        if (r >= PyList_GET_SIZE(out)) goto none; /* the dict grew (a GC finalizer) */
        if (PyLong_CheckExact(v)) {
            Py_ssize_t i = PyLong_AsSsize_t(v);
            if (i < 0 || i >= ncols) {
                PyErr_Clear();
                goto none;
            }
            const int64_t *c = cols + 5 * i;
            e = Py_BuildValue("(LL)", (long long)c[0], (long long)((c[2] + 4 - c[0] + 7) & ~7LL));
        } else if (PyTuple_CheckExact(v) && PyTuple_GET_SIZE(v) == 8) {
            e = PyTuple_Pack(2, PyTuple_GET_ITEM(v, 0), PyTuple_GET_ITEM(v, 1));
        } else {
            goto none;
        }
        if (e == NULL) goto fail;
        PyList_SET_ITEM(out, r++, e);
    }
    if (r != PyList_GET_SIZE(out)) goto none;
    if (cols != NULL) PyBuffer_Release(&cv);
    return out;
none:
    if (cols != NULL) PyBuffer_Release(&cv);
    Py_XDECREF(out); /* the slots not set yet are NULL: the list's dealloc skips them */
    Py_RETURN_NONE;
fail:
    if (cols != NULL) PyBuffer_Release(&cv);
    Py_XDECREF(out);
    return NULL;
}

/* --- onewrite: the arena allocator's alloc and free_many in C --- */

/* shm/alloc.py's Allocator, driven here on its own dicts and list (so the Python class
 * stays its twin and its state): alloc() with its _add() of the remainder, the same best
 * fit (the smallest size that fits, the most recently freed extent of that size:
 * dict.popitem), and free_many() with free() and _remove(), the same checks, messages
 * and order of dict updates. A one-record write allocates two blocks and, at a reclaim,
 * frees two: ~1 us an extent in Python (issue 17, thread CPU). */
typedef struct {
    PyObject *sizes, *bins, *by_start, *by_end; /* borrowed from the allocator's dict */
    long long free_bytes, lo, hi;                /* hi: start + size */
} Al;

/* Offsets and sizes C takes: past them (never an arena's), the Python method, so no
 * start + n can overflow a long long (which wrapped: a free of (8, 2**63-1) passed the
 * region check). */
#define AL_MAX (1LL << 61)

static PyObject *s_sizes, *s_bins, *s_by_start, *s_by_end, *s_free_bytes, *s_popitem;
static PyObject *s_start, *s_size;

static int al_load(PyObject *alloc, Al *al) {
    PyObject *d = PyObject_GenericGetDict(alloc, NULL);
    if (d == NULL) {
        PyErr_Clear();
        return 1;
    }
    al->sizes = PyDict_GetItem(d, s_sizes);
    al->bins = PyDict_GetItem(d, s_bins);
    al->by_start = PyDict_GetItem(d, s_by_start);
    al->by_end = PyDict_GetItem(d, s_by_end);
    PyObject *fb = PyDict_GetItem(d, s_free_bytes);
    PyObject *st = PyDict_GetItem(d, s_start), *sz = PyDict_GetItem(d, s_size);
    Py_DECREF(d); /* the instance keeps its dict and the values alive */
    if (!al->sizes || !PyList_CheckExact(al->sizes) || !al->bins || !PyDict_CheckExact(al->bins) ||
        !al->by_start || !PyDict_CheckExact(al->by_start) || !al->by_end ||
        !PyDict_CheckExact(al->by_end) || !fb || !PyLong_CheckExact(fb) || !st ||
        !PyLong_CheckExact(st) || !sz || !PyLong_CheckExact(sz))
        return 1;
    al->free_bytes = PyLong_AsLongLong(fb);
    al->lo = PyLong_AsLongLong(st);
    long long size = PyLong_AsLongLong(sz);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        return 1;
    }
    if (al->lo < 0 || size < 0 || al->lo > AL_MAX || size > AL_MAX) return 1;
    al->hi = al->lo + size;
    /* held until al_store: a dict update can run the cyclic GC, and a finalizer could
     * rebind the allocator's attributes (review of the onewrite branch) */
    Py_INCREF(al->sizes);
    Py_INCREF(al->bins);
    Py_INCREF(al->by_start);
    Py_INCREF(al->by_end);
    return 0;
}

/* free_bytes back to the allocator, also after an error (kept pending meanwhile): what
 * was freed before it stays freed, as in Python. */
static int al_store(PyObject *alloc, Al *al) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    Py_DECREF(al->sizes);
    Py_DECREF(al->bins);
    Py_DECREF(al->by_start);
    Py_DECREF(al->by_end);
    PyObject *fb = PyLong_FromLongLong(al->free_bytes);
    int r = fb == NULL ? -1 : PyObject_SetAttr(alloc, s_free_bytes, fb);
    Py_XDECREF(fb);
    if (type != NULL) {
        if (r < 0) PyErr_Clear();
        PyErr_Restore(type, value, tb);
    }
    return r;
}

/* Allocator._add(start, size) */
static int al_add(Al *al, long long start, long long size) {
    PyObject *s = PyLong_FromLongLong(start), *z = PyLong_FromLongLong(size);
    PyObject *e = PyLong_FromLongLong(start + size);
    int r = -1;
    if (!s || !z || !e) goto done;
    if (PyDict_SetItem(al->by_start, s, z) || PyDict_SetItem(al->by_end, e, s)) goto done;
    PyObject *starts = PyDict_GetItemWithError(al->bins, z);
    if (starts == NULL) {
        if (PyErr_Occurred()) goto done;
        PyObject *nd = PyDict_New();
        if (nd == NULL) goto done;
        if (PyDict_SetItem(nd, s, Py_None) || PyDict_SetItem(al->bins, z, nd)) {
            Py_DECREF(nd);
            goto done;
        }
        Py_DECREF(nd);
        /* bisect.insort: the size is not in the list (its bin was empty) */
        Py_ssize_t lo = 0, hi = PyList_GET_SIZE(al->sizes);
        while (lo < hi) {
            Py_ssize_t mid = (lo + hi) / 2;
            long long v = PyLong_AsLongLong(PyList_GET_ITEM(al->sizes, mid));
            if (v == -1 && PyErr_Occurred()) goto done;
            if (size < v)
                hi = mid;
            else
                lo = mid + 1;
        }
        if (PyList_Insert(al->sizes, lo, z)) goto done;
    } else if (PyDict_SetItem(starts, s, Py_None)) {
        goto done;
    }
    al->free_bytes += size;
    r = 0;
done:
    Py_XDECREF(s);
    Py_XDECREF(z);
    Py_XDECREF(e);
    return r;
}

/* Allocator.alloc(n): the extent's start, -1 when nothing fits, -2 on an error. */
static long long al_alloc(Al *al, long long n) {
    PyObject *sizes = al->sizes;
    Py_ssize_t lo = 0, hi = PyList_GET_SIZE(sizes);
    while (lo < hi) { /* bisect_left */
        Py_ssize_t mid = (lo + hi) / 2;
        long long v = PyLong_AsLongLong(PyList_GET_ITEM(sizes, mid));
        if (v == -1 && PyErr_Occurred()) return -2;
        if (v < n)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == PyList_GET_SIZE(sizes)) return -1;
    PyObject *key = PyList_GET_ITEM(sizes, lo);
    Py_INCREF(key);
    long long size = PyLong_AsLongLong(key), start = -2;
    PyObject *starts = PyDict_GetItemWithError(al->bins, key), *item = NULL, *end = NULL;
    if (starts == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "allocator: a size without a bin");
        goto done;
    }
    Py_INCREF(starts);
    item = PyObject_CallMethodNoArgs(starts, s_popitem);
    if (item == NULL || !PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) goto done;
    PyObject *sobj = PyTuple_GET_ITEM(item, 0);
    long long st = PyLong_AsLongLong(sobj);
    if (st == -1 && PyErr_Occurred()) goto done;
    if (PyDict_GET_SIZE(starts) == 0) {
        if (PyDict_DelItem(al->bins, key) || PySequence_DelItem(sizes, lo)) goto done;
    }
    end = PyLong_FromLongLong(st + size);
    if (end == NULL || PyDict_DelItem(al->by_start, sobj) || PyDict_DelItem(al->by_end, end))
        goto done;
    al->free_bytes -= size;
    if (size > n && al_add(al, st + n, size - n)) goto done;
    start = st;
done:
    Py_XDECREF(starts);
    Py_XDECREF(item);
    Py_XDECREF(end);
    Py_DECREF(key);
    return start;
}


/* Allocator._remove(start, size) */
static int al_remove(Al *al, long long start, long long size) {
    PyObject *s = PyLong_FromLongLong(start), *z = PyLong_FromLongLong(size);
    PyObject *e = PyLong_FromLongLong(start + size);
    int r = -1;
    if (!s || !z || !e) goto done;
    if (PyDict_DelItem(al->by_start, s) || PyDict_DelItem(al->by_end, e)) goto done;
    PyObject *starts = PyDict_GetItemWithError(al->bins, z);
    if (starts == NULL) {
        if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, z);
        goto done;
    }
    if (PyDict_DelItem(starts, s)) goto done;
    if (PyDict_GET_SIZE(starts) == 0) {
        if (PyDict_DelItem(al->bins, z)) goto done;
        Py_ssize_t lo = 0, hi = PyList_GET_SIZE(al->sizes);
        while (lo < hi) { /* bisect_left */
            Py_ssize_t mid = (lo + hi) / 2;
            long long v = PyLong_AsLongLong(PyList_GET_ITEM(al->sizes, mid));
            if (v == -1 && PyErr_Occurred()) goto done;
            if (v < size)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (PySequence_DelItem(al->sizes, lo)) goto done;
    }
    al->free_bytes -= size;
    r = 0;
done:
    Py_XDECREF(s);
    Py_XDECREF(z);
    Py_XDECREF(e);
    return r;
}

/* 1: key (an int) is in d; 0: not; -1: an error. *value: the borrowed value. */
static int al_get(PyObject *d, long long key, PyObject **value) {
    PyObject *k = PyLong_FromLongLong(key);
    if (k == NULL) return -1;
    *value = PyDict_GetItemWithError(d, k);
    Py_DECREF(k);
    if (*value == NULL) return PyErr_Occurred() ? -1 : 0;
    return 1;
}

/* Allocator.free(start, n) */
static int al_free(Al *al, long long start, long long n) {
    PyObject *v;
    if (start < al->lo || start + n > al->hi || n <= 0) {
        PyErr_Format(PyExc_ValueError, "extent %lld+%lld outside the region", start, n);
        return -1;
    }
    int a = al_get(al->by_start, start, &v), b = a ? a : al_get(al->by_end, start + n, &v);
    if (a < 0 || b < 0) return -1;
    if (a || b) {
        PyErr_Format(PyExc_ValueError, "double free of extent %lld+%lld", start, n);
        return -1;
    }
    int has = al_get(al->by_end, start, &v);
    if (has < 0) return -1;
    if (has) {
        long long prev = PyLong_AsLongLong(v), psize;
        if (prev == -1 && PyErr_Occurred()) return -1;
        has = al_get(al->by_start, prev, &v);
        if (has <= 0) {
            if (has == 0) PyErr_SetString(PyExc_KeyError, "allocator: by_end without by_start");
            return -1;
        }
        psize = PyLong_AsLongLong(v);
        if ((psize == -1 && PyErr_Occurred()) || al_remove(al, prev, psize)) return -1;
        start = prev;
        n += psize;
    }
    has = al_get(al->by_start, start + n, &v);
    if (has < 0) return -1;
    if (has) {
        long long nsize = PyLong_AsLongLong(v);
        if ((nsize == -1 && PyErr_Occurred()) || al_remove(al, start + n, nsize)) return -1;
        n += nsize;
    }
    return al_add(al, start, n);
}

static int pair_cmp(const void *a, const void *b) {
    const long long *x = a, *y = b;
    if (x[0] != y[0]) return x[0] < y[0] ? -1 : 1;
    return x[1] < y[1] ? -1 : x[1] > y[1];
}

/* What C does not take goes to the class's own method (Python), the twin. */
static PyObject *python_method(PyObject *obj, const char *name, PyObject *arg) {
    PyObject *f = PyObject_GetAttrString((PyObject *)Py_TYPE(obj), name);
    if (f == NULL) return NULL;
    PyObject *r = PyObject_CallFunctionObjArgs(f, obj, arg, NULL);
    Py_DECREF(f);
    return r;
}

/* alloc_take(allocator, n): Allocator.alloc's twin (the Python method for an n that is
 * not an exact 64-bit int or an allocator of another shape). */
static PyObject *alloc_take(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "alloc_take(allocator, n)");
        return NULL;
    }
    if (!PyLong_CheckExact(args[1])) return python_method(args[0], "_alloc_py", args[1]);
    long long n = PyLong_AsLongLong(args[1]);
    if (n == -1 && PyErr_Occurred()) PyErr_Clear();
    if (n < 0 || n > AL_MAX) return python_method(args[0], "_alloc_py", args[1]);
    Al al;
    if (al_load(args[0], &al)) return python_method(args[0], "_alloc_py", args[1]);
    long long got = al_alloc(&al, n);
    if (al_store(args[0], &al) < 0 || got == -2) return NULL;
    if (got == -1) Py_RETURN_NONE;
    return PyLong_FromLongLong(got);
}

/* alloc_free_many(allocator, extents): Allocator.free_many's twin (the Python method,
 * before anything is freed, for an input not of the plain shape: a list of (int, int)
 * tuples in the 64-bit range). */
static PyObject *alloc_free_many(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "alloc_free_many(allocator, extents)");
        return NULL;
    }
    if (!PyList_CheckExact(args[1])) return python_method(args[0], "_free_many_py", args[1]);
    PyObject *alloc = args[0], *extents = args[1];
    Py_ssize_t m = PyList_GET_SIZE(extents);
    long long *xs = PyMem_Malloc(sizeof(long long) * 2 * (size_t)(m ? m : 1));
    if (xs == NULL) return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < m; i++) {
        PyObject *e = PyList_GET_ITEM(extents, i);
        if (!PyTuple_CheckExact(e) || PyTuple_GET_SIZE(e) != 2 ||
            !PyLong_CheckExact(PyTuple_GET_ITEM(e, 0)) ||
            !PyLong_CheckExact(PyTuple_GET_ITEM(e, 1)))
            goto plain_not;
        xs[2 * i] = PyLong_AsLongLong(PyTuple_GET_ITEM(e, 0));
        xs[2 * i + 1] = PyLong_AsLongLong(PyTuple_GET_ITEM(e, 1));
        if (PyErr_Occurred()) {
            PyErr_Clear();
            goto plain_not;
        }
        if (xs[2 * i] < 0 || xs[2 * i] > AL_MAX || xs[2 * i + 1] < 0 || xs[2 * i + 1] > AL_MAX)
            goto plain_not;
    }
    Al al;
    if (al_load(alloc, &al)) goto plain_not;
    long long total = 0;
    int err = 0;
    if (m < 8) { /* too few to be worth sorting: one by one, as Python's */
        for (Py_ssize_t i = 0; i < m && !err; i++) {
            err = al_free(&al, xs[2 * i], xs[2 * i + 1]);
            if (!err) total += xs[2 * i + 1];
        }
    } else {
        qsort(xs, (size_t)m, 2 * sizeof(long long), pair_cmp);
        Py_ssize_t runs = 0;
        long long rs = -1, re = -1;
        PyObject *v;
        for (Py_ssize_t i = 0; i < m && !err; i++) { /* check all before freeing any */
            long long start = xs[2 * i], n = xs[2 * i + 1], end = start + n;
            if (start < al.lo || end > al.hi || n <= 0) {
                PyErr_Format(PyExc_ValueError, "extent %lld+%lld outside the region", start, n);
                err = 1;
                break;
            }
            int a = al_get(al.by_start, start, &v), b = a ? a : al_get(al.by_end, end, &v);
            if (a < 0 || b < 0) {
                err = 1;
                break;
            }
            if (a || b || start < re) {
                PyErr_Format(PyExc_ValueError, "double free of extent %lld+%lld", start, n);
                err = 1;
                break;
            }
            total += n;
            if (start == re) {
                re = end;
                continue;
            }
            if (re >= 0) { /* runs are written over xs from its start: never past i */
                xs[2 * runs] = rs;
                xs[2 * runs + 1] = re - rs;
                runs++;
            }
            rs = start;
            re = end;
        }
        if (!err) {
            xs[2 * runs] = rs;
            xs[2 * runs + 1] = re - rs;
            runs++;
            for (Py_ssize_t i = 0; i < runs && !err; i++) err = al_free(&al, xs[2 * i], xs[2 * i + 1]);
        }
    }
    PyMem_Free(xs);
    if (al_store(alloc, &al) < 0 || err) return NULL;
    return PyLong_FromLongLong(total);
plain_not:
    PyMem_Free(xs);
    return python_method(alloc, "_free_many_py", extents);
}

/* Allocator.alloc and .free_many as methods of the class (alloc_take_method,
 * alloc_free_many_method: instancemethod objects, which bind as a def does). Bound on
 * each instance as functools.partial(f, self) instead, every allocator was in a
 * reference cycle, and one frozen by gc.freeze() after a start was never freed once a
 * growth replaced it. */
static int onewrite_init(PyObject *m) {
    const char *names[2][2] = {{"alloc_take", "alloc_take_method"},
                               {"alloc_free_many", "alloc_free_many_method"}};
    for (int i = 0; i < 2; i++) {
        PyObject *f = PyObject_GetAttrString(m, names[i][0]);
        if (f == NULL) return -1;
        PyObject *meth = PyInstanceMethod_New(f);
        Py_DECREF(f);
        if (meth == NULL || PyModule_AddObject(m, names[i][1], meth) < 0) {
            Py_XDECREF(meth);
            return -1;
        }
    }
    return 0;
}

/* --- onewrite: one put's block (a commit's table meta) in one call --- */

/* prepare_one(prefix, table, rid, version, data): the 7-tuple of shm/blocks.py
 * _prepare_one_py, or None for what is not the plain case (the twin then runs and
 * raises what it raises). prepare() through its list, dict and argument parsing took
 * ~2 us for the table meta of every PATCH_RECORD's commit (issue 17, timeit). */
static PyObject *prepare_one_fast(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "prepare_one(prefix, table, rid, version, data)");
        return NULL;
    }
    PyObject *prefix = args[0], *t = args[1], *rid = args[2], *ver = args[3], *data = args[4];
    if (!PyBytes_CheckExact(prefix) || !PyUnicode_CheckExact(t) || !PyLong_CheckExact(ver) ||
        !PyBytes_CheckExact(data))
        Py_RETURN_NONE;
    long long seq = PyLong_AsLongLong(ver);
    if ((seq == -1 && PyErr_Occurred()) || seq < 0) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    Id id;
    if (id_parse(rid, &id)) Py_RETURN_NONE;
    Py_ssize_t plen = PyBytes_GET_SIZE(prefix), dlen = PyBytes_GET_SIZE(data);
    Py_ssize_t klen = plen + id.len, total = HSIZE + klen + dlen + 4;
    Py_ssize_t asize = (total + 7) & ~(Py_ssize_t)7;
    if (klen > MAX_KEY || total > 0xFFFFFFFFLL) Py_RETURN_NONE;
    PyObject *block = PyBytes_FromStringAndSize(NULL, asize);
    if (block == NULL) return NULL;
    uint32_t hcrc, crc;
    write_block((unsigned char *)PyBytes_AS_STRING(block), (uint64_t)seq,
                PyBytes_AS_STRING(prefix), plen, &id, PyBytes_AS_STRING(data), dlen, klen,
                total, asize, &hcrc, &crc);
    return Py_BuildValue("(OONnnkk)", t, rid, block, klen, dlen, (unsigned long)hcrc,
                         (unsigned long)crc);
}

/* --- getrec: Client.get_record in one C call ---
 * ClientCore and ViewCore are the compiled bases of Client and ArenaView
 * (client/client.py, client/view.py): they hold, as C members, the attributes
 * get_record reads (_view, use_arena, _closed, seen_seq; reader, deadline), so that
 * ClientCore._get_record_c, which Client binds as get_record, runs its Python body
 * (Client._get_record_py, the twin and the pure path's get_record) without a Python
 * frame and with no attribute lookup. Measured (python -m bench.getcpu --instructions,
 * 97 B records): a client get 16.1k -> 14.2k instructions (the raw get: 13.8k), CPU
 * 1.35x -> 1.11x the floor; the same code in C reading the attributes by
 * PyObject_GetAttr was no cheaper than the Python frame (~180 instructions a lookup).
 *
 * The members are read directly only while the object's type resolves each name to the
 * base's member descriptor (a subclass may define a property of that name): checked
 * once per type and version tag, as CPython's own attribute caches do. The reader's
 * _get_for is the C one when its type resolves "_get_for" to ReaderCore's (an instance
 * attribute of that name is not consulted: ArenaReader sets none on the compiled path).
 * Where the body leaves the plain path, C calls the Python methods that do the rest:
 * _get_record_stale (STALE: attach, re-check or wait, then the same TTL test) and
 * _get_record_remote (super().get_record: a miss, no arena, an expired record); a
 * keyword call or an unset member goes to _get_record_py. */

typedef struct {
    PyObject_HEAD
    PyObject *view, *use_arena, *closed, *seen_seq;
} ClientCore;

typedef struct {
    PyObject_HEAD
    PyObject *reader, *deadline;
} ViewCore;

static PyObject *s_get_record_py, *s_get_record_stale, *s_get_record_remote, *s_get_for_name,
    *s_expires, *s_wall_time, *s_recheck_soon;
static PyObject *client_globals; /* client/client.py's globals: _wall_time, read at each use */
static PyObject *snapshot_expired;

static int cc_traverse(ClientCore *self, visitproc visit, void *arg) {
    Py_VISIT(self->view);
    Py_VISIT(self->use_arena);
    Py_VISIT(self->closed);
    Py_VISIT(self->seen_seq);
    return 0;
}

static int cc_clear(ClientCore *self) {
    Py_CLEAR(self->view);
    Py_CLEAR(self->use_arena);
    Py_CLEAR(self->closed);
    Py_CLEAR(self->seen_seq);
    return 0;
}

static void cc_dealloc(ClientCore *self) {
    PyObject_GC_UnTrack(self);
    cc_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int vc_traverse(ViewCore *self, visitproc visit, void *arg) {
    Py_VISIT(self->reader);
    Py_VISIT(self->deadline);
    return 0;
}

static int vc_clear(ViewCore *self) {
    Py_CLEAR(self->reader);
    Py_CLEAR(self->deadline);
    return 0;
}

static void vc_dealloc(ViewCore *self) {
    PyObject_GC_UnTrack(self);
    vc_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef cc_members[] = {
    {"_view", T_OBJECT_EX, offsetof(ClientCore, view), 0, NULL},
    {"use_arena", T_OBJECT_EX, offsetof(ClientCore, use_arena), 0, NULL},
    {"_closed", T_OBJECT_EX, offsetof(ClientCore, closed), 0, NULL},
    {"seen_seq", T_OBJECT_EX, offsetof(ClientCore, seen_seq), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyMemberDef vc_members[] = {
    {"reader", T_OBJECT_EX, offsetof(ViewCore, reader), 0, NULL},
    {"deadline", T_OBJECT_EX, offsetof(ViewCore, deadline), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

/* A type whose attribute lookups of some names give the given descriptors, remembered
 * with its version tag (a change to the type or its bases clears or renews the tag). */
typedef struct {
    PyTypeObject *type; /* borrowed: only compared (tags are never reused) */
    unsigned int tag;
} TypeOk;

static int type_ok_slow(TypeOk *ok, PyTypeObject *tp, PyTypeObject *base,
                        PyObject *const *names, PyObject *const *want, int n) {
    if (!PyType_IsSubtype(tp, base)) return 0; /* its layout is not base's */
    /* a class overriding __getattribute__ or __getattr__ sees every lookup: Python's */
    if (tp->tp_getattro != PyObject_GenericGetAttr) return 0;
    for (int i = 0; i < n; i++) {
        PyObject *d = PyObject_GetAttr((PyObject *)tp, names[i]);
        if (d == NULL) {
            PyErr_Clear();
            return 0;
        }
        Py_DECREF(d);
        if (d != want[i]) return 0;
    }
    if (tp->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) {
        ok->type = tp;
        ok->tag = tp->tp_version_tag;
    }
    return 1;
}

/* 1 if objects of type tp have base's layout and their attributes names are the
 * descriptors want (the C members or method), else 0; inlined: ~30 instructions a call
 * as a function, three calls a get (callgrind). */
static inline int type_ok(TypeOk *ok, PyTypeObject *tp, PyTypeObject *base,
                          PyObject *const *names, PyObject *const *want, int n) {
    if (tp == ok->type && tp->tp_version_tag == ok->tag && ok->tag != 0 &&
        (tp->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG))
        return 1;
    return type_ok_slow(ok, tp, base, names, want, n);
}

static TypeOk client_ok, view_ok, reader_ok;
static PyObject *cc_names[4], *cc_descrs[4], *vc_names[2], *vc_descrs[2], *rc_descrs[1];
static PyTypeObject ClientCoreType, ViewCoreType;

static PyObject *call_method(PyObject *name, PyObject *self, PyObject *const *args,
                             size_t nargs, PyObject *kwnames) {
    PyObject *stack[8];
    size_t total = nargs + (kwnames ? (size_t)PyTuple_GET_SIZE(kwnames) : 0);
    if (total > 7) {
        PyErr_SetString(PyExc_TypeError, "get_record: too many arguments");
        return NULL;
    }
    stack[0] = self;
    for (size_t i = 0; i < total; i++) stack[i + 1] = args[i];
    return PyObject_VectorcallMethod(name, stack, (nargs + 1), kwnames);
}

/* record["_expires"] > _wall_time(), or "_expires" not in record: 1, 0 or -1. */
static int record_live(PyObject *record) {
    int has = PySequence_Contains(record, s_expires);
    if (has <= 0) return has < 0 ? -1 : 1;
    PyObject *exp = PyObject_GetItem(record, s_expires);
    if (exp == NULL) return -1;
    PyObject *wall = PyDict_GetItemWithError(client_globals, s_wall_time);
    if (wall == NULL) {
        Py_DECREF(exp);
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_NameError, "_wall_time");
        return -1;
    }
    Py_INCREF(wall);
    PyObject *now = PyObject_CallNoArgs(wall);
    Py_DECREF(wall);
    if (now == NULL) {
        Py_DECREF(exp);
        return -1;
    }
    int r = PyObject_RichCompareBool(exp, now, Py_GT);
    Py_DECREF(exp);
    Py_DECREF(now);
    return r;
}

static PyObject *core_get_for(Core *self, PyObject *const *args, Py_ssize_t nargs);

/* get_record(state, id): what Client._get_record_py returns or raises. */
static PyObject *cc_get_record(ClientCore *self, PyObject *const *args, size_t nargsf,
                               PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *me = (PyObject *)self;
    if (nargs != 2 || kwnames != NULL || client_globals == NULL ||
        !type_ok(&client_ok, Py_TYPE(me), &ClientCoreType, cc_names, cc_descrs, 4) ||
        self->view == NULL ||
        self->use_arena == NULL || self->closed == NULL)
        return call_method(s_get_record_py, me, args, (size_t)nargs, kwnames);
    PyObject *state = args[0], *rid = args[1], *view = self->view, *record, *reader;
    int r;
    /* view is not None and self.use_arena and not self._closed, and an int or str id
     * (1 == 1.0 == True as dict keys: only the server may judge other id types) */
    if (view == Py_None) goto remote;
    Py_INCREF(view); /* held, as the body's local: a __bool__ below may run Python code */
    r = self->use_arena == Py_True ? 1 : PyObject_IsTrue(self->use_arena);
    if (r > 0 && self->closed != Py_False) {
        r = PyObject_IsTrue(self->closed);
        r = r < 0 ? -1 : !r;
    }
    if (r > 0 && !PyLong_CheckExact(rid) && !PyUnicode_CheckExact(rid)) r = 0;
    if (r <= 0) {
        Py_DECREF(view);
        if (r < 0) return NULL;
        goto remote;
    }
    if (!type_ok(&view_ok, Py_TYPE(view), &ViewCoreType, vc_names, vc_descrs, 2) ||
        ((ViewCore *)view)->reader == NULL || ((ViewCore *)view)->deadline == NULL ||
        self->seen_seq == NULL) {
        Py_DECREF(view);
        return call_method(s_get_record_py, me, args, 2, NULL);
    }
    reader = ((ViewCore *)view)->reader;
    if (reader == Py_None) {
        Py_DECREF(view);
        return call_method(s_get_record_stale, me, args, 2, NULL);
    }
    Py_INCREF(reader);
    {
        PyObject *stack[5] = {reader, state, rid, self->seen_seq, ((ViewCore *)view)->deadline};
        Py_INCREF(stack[3]);
        Py_INCREF(stack[4]);
        if (type_ok(&reader_ok, Py_TYPE(reader), &CoreType, &s_get_for_name, rc_descrs, 1))
            record = core_get_for((Core *)reader, stack + 1, 4);
        else
            record = PyObject_VectorcallMethod(s_get_for_name, stack, 5, NULL);
        Py_DECREF(stack[3]);
        Py_DECREF(stack[4]);
    }
    Py_DECREF(reader);
    if (record == NULL) {
        if (!PyErr_ExceptionMatches(snapshot_expired)) {
            Py_DECREF(view);
            return NULL;
        }
        PyErr_Clear(); /* superseded by a restarted server, or damaged */
        PyObject *done = PyObject_CallMethodNoArgs(view, s_recheck_soon);
        Py_DECREF(view);
        if (done == NULL) return NULL;
        Py_DECREF(done);
        goto remote;
    }
    Py_DECREF(view);
    if (record == stale) {
        Py_DECREF(record);
        return call_method(s_get_record_stale, me, args, 2, NULL);
    }
    if (record == Py_None) {
        Py_DECREF(record);
        goto remote;
    }
    /* a record past its TTL goes to the server, which commits the expiry first */
    r = record_live(record);
    if (r > 0) return record;
    Py_DECREF(record);
    if (r < 0) return NULL;
remote:
    return call_method(s_get_record_remote, me, args, 2, NULL);
}

/* _client_setup(globals, SnapshotExpired): client/client.py, at its import. */
static PyObject *client_setup(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyDict_Check(args[0]) || !PyExceptionClass_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "_client_setup(globals, SnapshotExpired)");
        return NULL;
    }
    Py_INCREF(args[0]);
    Py_XSETREF(client_globals, args[0]);
    Py_INCREF(args[1]);
    Py_XSETREF(snapshot_expired, args[1]);
    Py_RETURN_NONE;
}

static PyMethodDef cc_methods[] = {
    {"_get_record_c", (PyCFunction)(void (*)(void))cc_get_record,
     METH_FASTCALL | METH_KEYWORDS,
     "_get_record_c($self, state, id)\n--\n\n"
     "The record, from the arena when attached (else the socket).\n\n"
     ":raises RecordNotFound: :raises StateNotFound:"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ClientCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "stateengine.shm._speedups.ClientCore",
    .tp_basicsize = sizeof(ClientCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The compiled base of Client: get_record's attributes and get_record.",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)cc_dealloc,
    .tp_traverse = (traverseproc)cc_traverse,
    .tp_clear = (inquiry)cc_clear,
    .tp_members = cc_members,
    .tp_methods = cc_methods,
};

static PyTypeObject ViewCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "stateengine.shm._speedups.ViewCore",
    .tp_basicsize = sizeof(ViewCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The compiled base of ArenaView: its reader and deadline.",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)vc_dealloc,
    .tp_traverse = (traverseproc)vc_traverse,
    .tp_clear = (inquiry)vc_clear,
    .tp_members = vc_members,
};

static int getrec_init(PyObject *m) {
    struct {
        PyObject **p;
        const char *s;
    } names[] = {
        {&s_get_record_py, "_get_record_py"},
        {&s_get_record_stale, "_get_record_stale"},
        {&s_get_record_remote, "_get_record_remote"},
        {&s_get_for_name, "_get_for"},
        {&s_expires, "_expires"},
        {&s_wall_time, "_wall_time"},
        {&s_recheck_soon, "recheck_soon"},
        {&cc_names[0], "_view"},
        {&cc_names[1], "use_arena"},
        {&cc_names[2], "_closed"},
        {&cc_names[3], "seen_seq"},
        {&vc_names[0], "reader"},
        {&vc_names[1], "deadline"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if ((*names[i].p = PyUnicode_InternFromString(names[i].s)) == NULL) return -1;
    if (PyType_Ready(&ClientCoreType) < 0 || PyType_Ready(&ViewCoreType) < 0) return -1;
    for (int i = 0; i < 4; i++)
        if ((cc_descrs[i] = PyDict_GetItemWithError(ClientCoreType.tp_dict, cc_names[i])) == NULL)
            return -1;
    for (int i = 0; i < 2; i++)
        if ((vc_descrs[i] = PyDict_GetItemWithError(ViewCoreType.tp_dict, vc_names[i])) == NULL)
            return -1;
    if ((rc_descrs[0] = PyDict_GetItemWithError(CoreType.tp_dict, s_get_for_name)) == NULL)
        return -1;
    Py_INCREF(&ClientCoreType);
    if (PyModule_AddObject(m, "ClientCore", (PyObject *)&ClientCoreType) < 0) {
        Py_DECREF(&ClientCoreType);
        return -1;
    }
    Py_INCREF(&ViewCoreType);
    if (PyModule_AddObject(m, "ViewCore", (PyObject *)&ViewCoreType) < 0) {
        Py_DECREF(&ViewCoreType);
        return -1;
    }
    return 0;
}

/* --- bulk: a big commit's per-put work (shm/writer.py), the engine's flat BATCHes ---
 *
 * commit_puts(mm, off, seq, puts, start, tables, next_pos, created, undo, retired, ops)
 *   -> (stop, off)
 * What ArenaWriter._apply_bulk's loop did per put in Python (twin: blocks.py
 * _commit_puts_py), for the prepared puts from puts[start] on, their blocks carved back
 * to back from off: each block copied into mm (None: not written, the caller writes
 * them), indexed in tables[t] as (off, asize, pstart, pend, hcrc, crc, pos, seq), pos
 * the old entry's or next_pos[t] (then incremented); a table not in tables is created
 * (undo gets (t, None, None), created gets t); an old entry's extent goes onto retired,
 * and (t, rid, old) onto undo unless the table is in created; ops (a list, or None) gets
 * one bytes object: the ring ops [2, t, rid, pstart, pend, hcrc, crc, pos, off] of
 * these puts in msgpack, back to back. It stops before a put that is not the plain case
 * (the twin takes that one: also a put over a loaded record, whose entry is its pos in the
 * table's compact index) and returns its index and its block's offset. */

typedef struct {
    unsigned char *buf;
    size_t len, cap;
} Buf;

static int buf_reserve(Buf *b, size_t more) {
    if (b->len + more <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more) cap *= 2;
    unsigned char *p = PyMem_Realloc(b->buf, cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->buf = p;
    b->cap = cap;
    return 0;
}

/* An exact int in 0..2**63-1 into *v; 0 when it is not one. */
static int uint_of(PyObject *o, unsigned long long *v) {
    if (!PyLong_CheckExact(o)) return 0;
    int ovf;
    long long x = PyLong_AsLongLongAndOverflow(o, &ovf);
    if (ovf || x < 0) {
        if (x == -1) PyErr_Clear();
        return 0;
    }
    *v = (unsigned long long)x;
    return 1;
}

/* next_pos[t] back from the counter when this call gave out positions. */
static int pos_flush(PyObject *next_pos, PyObject *t, long long pos, int dirty) {
    if (!dirty) return 0;
    PyObject *v = PyLong_FromLongLong(pos);
    if (v == NULL) return -1;
    int r = PyDict_SetItem(next_pos, t, v);
    Py_DECREF(v);
    return r;
}

static PyObject *commit_puts(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 11 || !PyList_CheckExact(args[3]) || !PyDict_CheckExact(args[5]) ||
        !PyDict_CheckExact(args[6]) || !PyAnySet_CheckExact(args[7]) ||
        !PyList_CheckExact(args[8]) || !PyList_CheckExact(args[9]) ||
        (args[10] != Py_None && !PyList_CheckExact(args[10]))) {
        PyErr_SetString(PyExc_TypeError,
                        "commit_puts(mm, off, seq, list, start, dict, dict, set, list, list, "
                        "list | None)");
        return NULL;
    }
    PyObject *mm = args[0], *seqo = args[2], *puts = args[3], *tables = args[5];
    PyObject *next_pos = args[6], *created = args[7], *undo = args[8], *retired = args[9];
    PyObject *ops = args[10];
    Py_ssize_t off = PyLong_AsSsize_t(args[1]), i = PyLong_AsSsize_t(args[4]);
    if ((off == -1 || i == -1) && PyErr_Occurred()) return NULL;
    if (off < 0 || i < 0) {
        PyErr_SetString(PyExc_ValueError, "commit_puts: negative offset or start");
        return NULL;
    }
    if (!PyLong_CheckExact(seqo)) {
        PyErr_SetString(PyExc_TypeError, "commit_puts: seq must be an int");
        return NULL;
    }
    Py_buffer view = {0};
    int have_view = 0;
    if (mm != Py_None) {
        if (PyObject_GetBuffer(mm, &view, PyBUF_WRITABLE) < 0) return NULL;
        have_view = 1;
    }
    Buf ob = {NULL, 0, 0};
    PyObject *last_t = NULL, *tdict = NULL, *res = NULL;
    int fresh = 0, dirty = 0, failed = 0;
    long long pos_next = 0;
    const char *ts = NULL; /* the current table's UTF-8, for the ring ops */
    Py_ssize_t tn = 0;
    /* puts is re-measured every round, each put held while used, the current table and
     * its dict held by strong references: an allocation can run a GC finalizer (Python
     * code) that changes the lists or dicts (see prepare). */
    for (; i < PyList_GET_SIZE(puts); i++) {
        PyObject *put = PyList_GET_ITEM(puts, i);
        if (!PyTuple_CheckExact(put) || PyTuple_GET_SIZE(put) != 7) break;
        Py_INCREF(put);
        PyObject *t = PyTuple_GET_ITEM(put, 0), *rid = PyTuple_GET_ITEM(put, 1);
        PyObject *block = PyTuple_GET_ITEM(put, 2), *hcrco = PyTuple_GET_ITEM(put, 5);
        PyObject *crco = PyTuple_GET_ITEM(put, 6);
        unsigned long long klen, dlen, hcrc, crc;
        Id id;
        if (!PyUnicode_CheckExact(t) || !PyBytes_CheckExact(block) || id_parse(rid, &id) ||
            !uint_of(PyTuple_GET_ITEM(put, 3), &klen) || !uint_of(PyTuple_GET_ITEM(put, 4), &dlen) ||
            !uint_of(hcrco, &hcrc) || !uint_of(crco, &crc) || hcrc > 0xFFFFFFFFULL ||
            crc > 0xFFFFFFFFULL || klen > MAX_KEY || dlen > 0xFFFFFFFFULL) {
            Py_DECREF(put);
            break;
        }
        Py_ssize_t asize = PyBytes_GET_SIZE(block);
        if (!have_view && (off > PY_SSIZE_T_MAX / 4 || asize > PY_SSIZE_T_MAX / 4)) {
            Py_DECREF(put); /* offsets that could overflow here: the twin's big ints */
            break;
        }
        if (have_view && (off > view.len || asize > view.len - off)) {
            Py_DECREF(put);
            PyErr_SetString(PyExc_ValueError, "commit_puts: a block past the mapping");
            failed = 1;
            break;
        }
        if (t != last_t) {
            if (last_t != NULL && pos_flush(next_pos, last_t, pos_next, dirty) < 0) {
                Py_DECREF(put);
                failed = 1;
                break;
            }
            Py_CLEAR(last_t);
            Py_CLEAR(tdict);
            dirty = 0;
            /* each lookup can run Python code (a key's __eq__): d held at once */
            PyObject *d = PyDict_GetItemWithError(tables, t);
            Py_XINCREF(d);
            PyObject *p = PyErr_Occurred() ? NULL : PyDict_GetItemWithError(next_pos, t);
            if (PyErr_Occurred()) {
                Py_XDECREF(d);
                Py_DECREF(put);
                failed = 1;
                break;
            }
            ts = PyUnicode_AsUTF8AndSize(t, &tn);
            if (ts == NULL) PyErr_Clear(); /* a surrogate: the twin raises what it raises */
            if (ts == NULL || (d != NULL && !PyDict_CheckExact(d)) ||
                (p != NULL && !PyLong_CheckExact(p))) {
                Py_XDECREF(d);
                Py_DECREF(put);
                break; /* not the plain case: the twin's */
            }
            if (p != NULL) {
                int ovf;
                pos_next = PyLong_AsLongLongAndOverflow(p, &ovf);
                if (ovf || pos_next < 0) {
                    PyErr_Clear();
                    Py_XDECREF(d);
                    Py_DECREF(put);
                    break;
                }
            } else {
                pos_next = 0;
            }
            if (d != NULL) {
                tdict = d;
                int in = PySet_Contains(created, t);
                if (in < 0) {
                    Py_DECREF(put);
                    failed = 1;
                    break;
                }
                fresh = in;
            } else {
                tdict = PyDict_New();
                PyObject *u = tdict ? PyTuple_Pack(3, t, Py_None, Py_None) : NULL;
                int bad = u == NULL || PyDict_SetItem(tables, t, tdict) < 0;
                if (!bad && PyList_Append(undo, u) < 0) {
                    PyDict_DelItem(tables, t);
                    bad = 1;
                }
                Py_XDECREF(u);
                if (!bad && PySet_Add(created, t) < 0) bad = 1; /* undo holds the creation */
                if (bad) {
                    Py_DECREF(put);
                    failed = 1;
                    break;
                }
                fresh = 1;
            }
            Py_INCREF(t);
            last_t = t;
        }
        PyObject *old = PyDict_GetItemWithError(tdict, rid);
        if (old == NULL && PyErr_Occurred()) {
            Py_DECREF(put);
            failed = 1;
            break;
        }
        Py_XINCREF(old);
        unsigned long long opos = 0;
        if (old != NULL && (!PyTuple_CheckExact(old) || PyTuple_GET_SIZE(old) != 8 ||
                            !uint_of(PyTuple_GET_ITEM(old, 6), &opos))) {
            Py_DECREF(old);
            Py_DECREF(put);
            break;
        }
        Py_ssize_t pstart = off + HSIZE + (Py_ssize_t)klen, pend = pstart + (Py_ssize_t)dlen;
        PyObject *e = PyTuple_New(8);
        PyObject *posobj;
        if (old == NULL) {
            posobj = PyLong_FromLongLong(pos_next);
        } else {
            posobj = PyTuple_GET_ITEM(old, 6);
            Py_INCREF(posobj);
        }
        PyObject *v[4] = {PyLong_FromSsize_t(off), PyLong_FromSsize_t(asize),
                          PyLong_FromSsize_t(pstart), PyLong_FromSsize_t(pend)};
        int bad = e == NULL || posobj == NULL;
        for (int k = 0; k < 4; k++)
            if (v[k] == NULL) bad = 1;
        if (e != NULL) {
            for (int k = 0; k < 4; k++) PyTuple_SET_ITEM(e, k, v[k]);
            Py_INCREF(hcrco);
            Py_INCREF(crco);
            Py_INCREF(seqo);
            PyTuple_SET_ITEM(e, 4, hcrco);
            PyTuple_SET_ITEM(e, 5, crco);
            PyTuple_SET_ITEM(e, 6, posobj);
            PyTuple_SET_ITEM(e, 7, seqo);
        } else {
            for (int k = 0; k < 4; k++) Py_XDECREF(v[k]);
            Py_XDECREF(posobj);
        }
        /* the old extent retired and the undo entry first: an index changed with no way
         * back would be wrong after an error; an extra undo entry is harmless */
        if (!bad && old != NULL) {
            PyObject *x = PyTuple_Pack(2, PyTuple_GET_ITEM(old, 0), PyTuple_GET_ITEM(old, 1));
            bad = x == NULL || PyList_Append(retired, x) < 0;
            Py_XDECREF(x);
        }
        if (!bad && !fresh) {
            PyObject *u = PyTuple_Pack(3, t, rid, old != NULL ? old : Py_None);
            bad = u == NULL || PyList_Append(undo, u) < 0;
            Py_XDECREF(u);
        }
        if (!bad) bad = PyDict_SetItem(tdict, rid, e) < 0;
        Py_XDECREF(e);
        if (bad) {
            Py_XDECREF(old);
            Py_DECREF(put);
            failed = 1;
            break;
        }
        unsigned long long pos = old != NULL ? opos : (unsigned long long)pos_next;
        Py_XDECREF(old);
        if (old == NULL) {
            pos_next++;
            dirty = 1;
        }
        if (ops != Py_None) {
            if (buf_reserve(&ob, (size_t)(2 + 5 + tn + id.len + 6 * 9)) < 0) {
                Py_DECREF(put);
                failed = 1;
                break;
            }
            Id tid = {ts, tn, 0, 0};
            unsigned char *w = ob.buf + ob.len;
            *w++ = 0x99; /* fixarray of 9 */
            *w++ = 2;    /* a put */
            w = put_id(w, &tid);
            w = put_id(w, &id);
            w = put_uint(w, (uint64_t)pstart);
            w = put_uint(w, (uint64_t)pend);
            w = put_uint(w, hcrc);
            w = put_uint(w, crc);
            w = put_uint(w, pos);
            w = put_uint(w, (uint64_t)off);
            ob.len = (size_t)(w - ob.buf);
        }
        if (have_view) memcpy((char *)view.buf + off, PyBytes_AS_STRING(block), (size_t)asize);
        Py_DECREF(put);
        off += asize;
    }
    if (!failed && last_t != NULL && pos_flush(next_pos, last_t, pos_next, dirty) < 0) failed = 1;
    if (!failed && ops != Py_None && ob.len) {
        PyObject *b = PyBytes_FromStringAndSize((const char *)ob.buf, (Py_ssize_t)ob.len);
        if (b == NULL || PyList_Append(ops, b) < 0) failed = 1;
        Py_XDECREF(b);
    }
    if (!failed) res = Py_BuildValue("(nn)", i, off);
    PyMem_Free(ob.buf);
    Py_XDECREF(last_t);
    Py_XDECREF(tdict);
    if (have_view) PyBuffer_Release(&view);
    return res;
}

/* flat_merge(ids, patches, records, accepts) -> list | None | NotImplemented: the merge
 * loop of the engine's BATCH of plain patches (server/engine.py _flat_patches; twin:
 * blocks.py _flat_merge_py): per (id, fields), in order, the record as the earlier
 * patches of this batch left it (else records[id]) merged with fields, {**old, **fields};
 * the merged records, or None when a record is missing, fields hold "id", a field not in
 * accepts or a value whose exact type is not in accepts[field] (the general path's then).
 * NotImplemented when an input is not the plain case (the twin's then). */
static PyObject *s_id; /* "id" */

static PyObject *flat_merge(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyList_CheckExact(args[0]) || !PyList_CheckExact(args[1]) ||
        !PyDict_CheckExact(args[2]) || !PyDict_CheckExact(args[3]) ||
        PyList_GET_SIZE(args[0]) != PyList_GET_SIZE(args[1])) {
        PyErr_SetString(PyExc_TypeError, "flat_merge(list, list of the same length, dict, dict)");
        return NULL;
    }
    PyObject *records = args[2], *accepts = args[3], *res = NULL;
    /* private copies: a GC finalizer run by an allocation could change the caller's */
    PyObject *ids = PyList_GetSlice(args[0], 0, PY_SSIZE_T_MAX);
    PyObject *patches = PyList_GetSlice(args[1], 0, PY_SSIZE_T_MAX);
    PyObject *staged = PyDict_New(), *out = PyList_New(0);
    if (ids == NULL || patches == NULL || staged == NULL || out == NULL) goto done;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(ids); i++) {
        PyObject *rid = PyList_GET_ITEM(ids, i), *fields = PyList_GET_ITEM(patches, i);
        if (!PyDict_CheckExact(fields) || !(PyLong_CheckExact(rid) || PyUnicode_CheckExact(rid)))
            goto twin;
        /* old = staged.get(rid) or records.get(rid): a staged record is a dict this call
         * made (no Python code in its lookup by an exact int or str) */
        PyObject *old = PyDict_GetItemWithError(staged, rid);
        if (old == NULL && PyErr_Occurred()) goto done;
        if (old == NULL || PyDict_GET_SIZE(old) == 0) {
            old = PyDict_GetItemWithError(records, rid);
            if (old == NULL) {
                if (PyErr_Occurred()) goto done;
                Py_INCREF(Py_None);
                res = Py_None; /* RecordNotFound: the general path names it */
                goto done;
            }
            if (!PyDict_CheckExact(old)) goto twin;
        }
        Py_INCREF(old);
        int has_id = PyDict_Contains(fields, s_id);
        if (has_id != 0) {
            Py_DECREF(old);
            if (has_id < 0) goto done;
            Py_INCREF(Py_None);
            res = Py_None;
            goto done;
        }
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        int verdict = 1; /* 1: flat; 0: not (None); -1: an error; 2: the twin's */
        while (verdict == 1 && PyDict_Next(fields, &pos, &k, &v)) {
            if (!PyUnicode_CheckExact(k)) {
                verdict = 2; /* a lookup by it could run Python code */
                break;
            }
            PyObject *ok = PyDict_GetItemWithError(accepts, k);
            if (ok == NULL) {
                verdict = PyErr_Occurred() ? -1 : 0;
                break;
            }
            if (!PyTuple_CheckExact(ok)) {
                verdict = 2;
                break;
            }
            Py_ssize_t m = PyTuple_GET_SIZE(ok), j = 0;
            while (j < m && PyTuple_GET_ITEM(ok, j) != (PyObject *)Py_TYPE(v)) j++;
            if (j == m) verdict = 0;
        }
        if (verdict != 1) {
            Py_DECREF(old);
            if (verdict < 0) goto done;
            if (verdict == 2) goto twin;
            Py_INCREF(Py_None);
            res = Py_None;
            goto done;
        }
        PyObject *record = PyDict_Copy(old);
        Py_DECREF(old);
        if (record == NULL) goto done;
        if (PyDict_Update(record, fields) < 0 || PyDict_SetItem(staged, rid, record) < 0 ||
            PyList_Append(out, record) < 0) {
            Py_DECREF(record);
            goto done;
        }
        Py_DECREF(record);
    }
    Py_INCREF(out);
    res = out;
    goto done;
twin:
    Py_INCREF(Py_NotImplemented);
    res = Py_NotImplemented;
done:
    Py_XDECREF(ids);
    Py_XDECREF(patches);
    Py_XDECREF(staged);
    Py_XDECREF(out);
    return res;
}


/* flat_apply(ids, out, records, changes, journal, table, name, version, missing, reserved,
 *            expires) -> list[int]: the apply loop of the engine's BATCH of plain patches
 * for a table without leases (twin: blocks.py _flat_apply_py): per id and its merged
 * record, in order, the journal entry ("rec", table, id, records[id], missing, None), the
 * record stamped record[reserved] = version and stored, changes[(name, id)] = None; the
 * indexes of the records whose expires field is set (the caller queues their deadlines).
 * A KeyError for an id not in records, as records[id] raises. */
static PyObject *s_rec; /* "rec" */

static PyObject *flat_apply(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 11 || !PyList_CheckExact(args[0]) || !PyList_CheckExact(args[1]) ||
        !PyDict_CheckExact(args[2]) || !PyDict_CheckExact(args[3]) ||
        !PyList_CheckExact(args[4]) || PyList_GET_SIZE(args[0]) != PyList_GET_SIZE(args[1])) {
        PyErr_SetString(PyExc_TypeError,
                        "flat_apply(list, list of the same length, dict, dict, list, ...)");
        return NULL;
    }
    PyObject *records = args[2], *changes = args[3], *journal = args[4], *table = args[5];
    PyObject *name = args[6], *version = args[7], *missing = args[8], *reserved = args[9];
    PyObject *expires = args[10], *res = NULL;
    /* private copies: a GC finalizer run by an allocation could change the caller's */
    PyObject *ids = PyList_GetSlice(args[0], 0, PY_SSIZE_T_MAX);
    PyObject *out = PyList_GetSlice(args[1], 0, PY_SSIZE_T_MAX);
    PyObject *timed = PyList_New(0);
    if (ids == NULL || out == NULL || timed == NULL) goto done;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(ids); i++) {
        PyObject *rid = PyList_GET_ITEM(ids, i), *rec = PyList_GET_ITEM(out, i);
        if (!PyDict_Check(rec)) {
            PyErr_SetString(PyExc_TypeError, "flat_apply: a merged record is not a dict");
            goto done;
        }
        PyObject *old = PyDict_GetItemWithError(records, rid);
        if (old == NULL) {
            if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, rid);
            goto done;
        }
        PyObject *j = PyTuple_Pack(6, s_rec, table, rid, old, missing, Py_None);
        if (j == NULL) goto done;
        int bad = PyList_Append(journal, j);
        Py_DECREF(j);
        if (bad || PyDict_SetItem(rec, reserved, version) < 0 ||
            PyDict_SetItem(records, rid, rec) < 0)
            goto done;
        PyObject *key = PyTuple_Pack(2, name, rid);
        if (key == NULL) goto done;
        bad = PyDict_SetItem(changes, key, Py_None);
        Py_DECREF(key);
        if (bad) goto done;
        PyObject *e = PyDict_GetItemWithError(rec, expires);
        if (e == NULL && PyErr_Occurred()) goto done;
        if (e != NULL && e != Py_None) {
            PyObject *ix = PyLong_FromSsize_t(i);
            if (ix == NULL || PyList_Append(timed, ix) < 0) {
                Py_XDECREF(ix);
                goto done;
            }
            Py_DECREF(ix);
        }
    }
    Py_INCREF(timed);
    res = timed;
done:
    Py_XDECREF(ids);
    Py_XDECREF(out);
    Py_XDECREF(timed);
    return res;
}


/* flat_patch_args(commands, name) -> (ids, patches) | None | NotImplemented: the checks
 * of the engine's BATCH of plain patches in one pass (twin: blocks.py
 * _flat_patch_args_py): every command an exact dict of exactly "command" ==
 * "PATCH_RECORD", "state" == name, "id" an exact int in the signed 64-bit range and
 * "fields" an exact dict; their ids and fields. None when one is not; NotImplemented when
 * a command or state value is not an exact str (the twin's sets judge it). */
static PyObject *s_command, *s_state, *s_fields, *s_patch_record;

/* One command's checks, shared by flat_patch_args and flat_create_args: an exact dict of
 * exactly size keys, all exact str, "command" == want and "state" == name, looked up in
 * the twins' order (command, state, ka, kb). 0: it passes (*a, *b: its values of ka and
 * kb; kb NULL: *b = *a); 1: it does not (None); 2: a key, command or state not an exact
 * str (NotImplemented: the twin judges); -1: an error. */
static int flat_command(PyObject *c, Py_ssize_t size, PyObject *want, PyObject *name,
                        PyObject *ka, PyObject *kb, PyObject **a, PyObject **b) {
    if (!PyDict_CheckExact(c) || PyDict_GET_SIZE(c) != size) return 1;
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(c, &pos, &k, &v))
        if (!PyUnicode_CheckExact(k)) return 2; /* its __eq__ could run in a lookup */
    PyObject *cmd = PyDict_GetItemWithError(c, s_command);
    PyObject *st = cmd ? PyDict_GetItemWithError(c, s_state) : NULL;
    *a = st ? PyDict_GetItemWithError(c, ka) : NULL;
    *b = kb == NULL ? *a : *a ? PyDict_GetItemWithError(c, kb) : NULL;
    if (*b == NULL) return PyErr_Occurred() ? -1 : 1;
    if (!PyUnicode_CheckExact(cmd) || !PyUnicode_CheckExact(st)) return 2;
    if (PyUnicode_Compare(cmd, want) != 0 || PyUnicode_Compare(st, name) != 0) return 1;
    return 0;
}

static PyObject *flat_patch_args(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyList_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "flat_patch_args(list, name)");
        return NULL;
    }
    PyObject *name = args[1];
    if (!PyUnicode_CheckExact(name)) Py_RETURN_NOTIMPLEMENTED;
    /* a private copy: a lookup in a command can run Python code (a key's __eq__) */
    PyObject *commands = PyList_GetSlice(args[0], 0, PY_SSIZE_T_MAX);
    if (commands == NULL) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(commands);
    PyObject *ids = PyList_New(n), *patches = PyList_New(n), *res = NULL;
    if (ids == NULL || patches == NULL) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *rid, *f;
        int r = flat_command(PyList_GET_ITEM(commands, i), 4, s_patch_record, name, s_id,
                             s_fields, &rid, &f);
        if (r < 0) goto done;
        if (r == 1) goto none;
        if (r == 2) goto twin;
        if (!PyLong_CheckExact(rid) || !PyDict_CheckExact(f)) goto none;
        int ovf;
        PyLong_AsLongLongAndOverflow(rid, &ovf);
        if (ovf) goto none;
        Py_INCREF(rid);
        Py_INCREF(f);
        PyList_SET_ITEM(ids, i, rid);
        PyList_SET_ITEM(patches, i, f);
    }
    res = PyTuple_Pack(2, ids, patches);
    goto done;
none:
    Py_INCREF(Py_None);
    res = Py_None;
    goto done;
twin:
    Py_INCREF(Py_NotImplemented);
    res = Py_NotImplemented;
done:
    Py_DECREF(commands);
    Py_XDECREF(ids); /* slots not set yet are NULL: the list's dealloc skips them */
    Py_XDECREF(patches);
    return res;
}


/* flat_create_args(commands, name) -> list | None | NotImplemented: the checks of the
 * engine's BATCH of creates (server/engine.py _flat_creates; twin: blocks.py
 * _flat_create_args_py) in one pass: every command an exact dict of exactly "command" ==
 * "CREATE_RECORD", "state" == name and "record"; their records. None when one is not;
 * NotImplemented when a key, command or state is not an exact str (the twin's sets). */
static PyObject *s_record, *s_create_record;

static PyObject *flat_create_args(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyList_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "flat_create_args(list, name)");
        return NULL;
    }
    PyObject *name = args[1];
    if (!PyUnicode_CheckExact(name)) Py_RETURN_NOTIMPLEMENTED;
    /* a private copy: a lookup in a command can run Python code (a key's __eq__) */
    PyObject *commands = PyList_GetSlice(args[0], 0, PY_SSIZE_T_MAX);
    if (commands == NULL) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(commands);
    PyObject *records = PyList_New(n), *res = NULL;
    if (records == NULL) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *rec, *same;
        int r = flat_command(PyList_GET_ITEM(commands, i), 3, s_create_record, name, s_record,
                             NULL, &rec, &same);
        if (r < 0) goto done;
        if (r == 1) goto none;
        if (r == 2) goto twin;
        Py_INCREF(rec);
        PyList_SET_ITEM(records, i, rec);
    }
    Py_INCREF(records);
    res = records;
    goto done;
none:
    Py_INCREF(Py_None);
    res = Py_None;
    goto done;
twin:
    Py_INCREF(Py_NotImplemented);
    res = Py_NotImplemented;
done:
    Py_DECREF(commands);
    Py_XDECREF(records); /* slots not set yet are NULL: the list's dealloc skips them */
    return res;
}


/* runs(extents) -> list: (off, n) extents sorted, those that touch merged into one (twin:
 * blocks.py _runs_py); overlapping ones stay apart (free_many then refuses them). A
 * dropped table a big commit wrote is one run: its reclaim frees one extent, not one a
 * record. A TypeError for an item that is not a pair of ints in 0..2**62. */
typedef struct {
    unsigned long long start, n;
} Ext;

static int ext_cmp(const void *a, const void *b) {
    const Ext *x = a, *y = b;
    if (x->start != y->start) return x->start < y->start ? -1 : 1;
    return x->n < y->n ? -1 : x->n > y->n;
}

static PyObject *runs(PyObject *self, PyObject *list) {
    if (!PyList_CheckExact(list)) {
        PyErr_SetString(PyExc_TypeError, "runs(list)");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(list), k;
    Ext *xs = PyMem_Malloc(sizeof(Ext) * (size_t)(n ? n : 1));
    if (xs == NULL) return PyErr_NoMemory();
    for (k = 0; k < n; k++) { /* nothing here runs Python code: the list cannot change */
        PyObject *e = PyList_GET_ITEM(list, k);
        if (!PyTuple_CheckExact(e) || PyTuple_GET_SIZE(e) != 2 ||
            !uint_of(PyTuple_GET_ITEM(e, 0), &xs[k].start) ||
            !uint_of(PyTuple_GET_ITEM(e, 1), &xs[k].n) || xs[k].start > (1ULL << 62) ||
            xs[k].n > (1ULL << 62)) {
            PyMem_Free(xs);
            PyErr_SetString(PyExc_TypeError, "runs: an extent is not two ints in 0..2**62");
            return NULL;
        }
    }
    /* a table a big commit wrote is in offset order already: no sort then */
    int sorted = 1;
    for (k = 1; k < n && sorted; k++) sorted = ext_cmp(&xs[k - 1], &xs[k]) <= 0;
    if (!sorted) qsort(xs, (size_t)n, sizeof(Ext), ext_cmp);
    PyObject *out = PyList_New(0);
    for (Py_ssize_t a = 0; out != NULL && a < n;) {
        unsigned long long start = xs[a].start, end = start + xs[a].n;
        Py_ssize_t b = a + 1;
        while (b < n && xs[b].start == end) end += xs[b++].n;
        PyObject *x = Py_BuildValue("(KK)", start, end - start);
        if (x == NULL || PyList_Append(out, x) < 0) Py_CLEAR(out);
        Py_XDECREF(x);
        a = b;
    }
    PyMem_Free(xs);
    return out;
}

static PyMethodDef methods[] = {
    {"extents", extents, METH_VARARGS, "A writer table's blocks (see shm/blocks.py)."},
    {"rows", rows, METH_VARARGS, "A writer table's checkpoint rows (see shm/blocks.py)."},
    {"prepare", prepare, METH_VARARGS, "Build commit puts' blocks (see shm/blocks.py)."},
    {"measure", measure, METH_VARARGS, "Check and size a loaded table (see shm/blocks.py)."},
    {"place", place, METH_VARARGS, "Write, index and checkpoint loaded records."},
    {"flat_ids", (PyCFunction)(void (*)(void))flat_ids, METH_FASTCALL,
     "The ids of a load of flat records (see shm/blocks.py)."},
    {"alloc_take", (PyCFunction)(void (*)(void))alloc_take, METH_FASTCALL,
     "Allocator.alloc in C (see shm/alloc.py)."},
    {"alloc_free_many", (PyCFunction)(void (*)(void))alloc_free_many, METH_FASTCALL,
     "Allocator.free_many in C (see shm/alloc.py)."},
    {"prepare_one", (PyCFunction)(void (*)(void))prepare_one_fast, METH_FASTCALL,
     "One put's block (see shm/blocks.py prepare_one)."},
    /* getrec */
    {"_client_setup", (PyCFunction)(void (*)(void))client_setup, METH_FASTCALL,
     "Give ClientCore client/client.py's globals and SnapshotExpired."},
    /* bulk */
    {"commit_puts", (PyCFunction)(void (*)(void))commit_puts, METH_FASTCALL,
     "Write, index and ring-encode a big commit's puts (see shm/blocks.py)."},
    {"flat_merge", (PyCFunction)(void (*)(void))flat_merge, METH_FASTCALL,
     "Merge a BATCH's plain patches into their records (see shm/blocks.py)."},
    {"flat_apply", (PyCFunction)(void (*)(void))flat_apply, METH_FASTCALL,
     "Journal, stamp and store a BATCH's merged records (see shm/blocks.py)."},
    {"flat_patch_args", (PyCFunction)(void (*)(void))flat_patch_args, METH_FASTCALL,
     "Check a BATCH of plain patches, their ids and fields (see shm/blocks.py)."},
    {"flat_create_args", (PyCFunction)(void (*)(void))flat_create_args, METH_FASTCALL,
     "Check a BATCH of creates, their records (see shm/blocks.py)."},
    {"runs", runs, METH_O, "Extents sorted, touching ones merged (see shm/blocks.py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_speedups",
                                    "The arena writer's per-record loops in C.", -1, methods};

PyMODINIT_FUNC PyInit__speedups(void) {
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    PyErr_SetString(PyExc_ImportError, "_speedups: little-endian platforms only");
    return NULL;
#endif
    crc_init();
    /* interned: Cython's keyword matching compares names by identity first (a built,
     * not interned, name took its string-compare path: ~90 instructions a get) */
    PyObject *kw = PyUnicode_InternFromString("strict_map_key");
    kw_strict = kw == NULL ? NULL : PyTuple_Pack(1, kw);
    Py_XDECREF(kw);
    s_get_sync = PyUnicode_InternFromString("_get_sync");
    s_get_retried = PyUnicode_InternFromString("_get_retried");
#if !defined(__linux__)
    PyObject *time_mod = PyImport_ImportModule("time");
    if (time_mod == NULL) return NULL;
    py_monotonic = PyObject_GetAttrString(time_mod, "monotonic");
    Py_DECREF(time_mod);
    if (py_monotonic == NULL) return NULL;
#endif
    s_get = PyUnicode_InternFromString("get");
    s_sizes = PyUnicode_InternFromString("_sizes");
    s_bins = PyUnicode_InternFromString("_bins");
    s_by_start = PyUnicode_InternFromString("_by_start");
    s_by_end = PyUnicode_InternFromString("_by_end");
    s_free_bytes = PyUnicode_InternFromString("free_bytes");
    s_popitem = PyUnicode_InternFromString("popitem");
    s_start = PyUnicode_InternFromString("start");
    s_size = PyUnicode_InternFromString("size");
    if (!s_sizes || !s_bins || !s_by_start || !s_by_end || !s_free_bytes || !s_popitem ||
        !s_start || !s_size)
        return NULL;
    s_id = PyUnicode_InternFromString("id"); /* bulk: flat_merge, flat_apply */
    s_rec = PyUnicode_InternFromString("rec");
    s_command = PyUnicode_InternFromString("command");
    s_state = PyUnicode_InternFromString("state");
    s_fields = PyUnicode_InternFromString("fields");
    s_patch_record = PyUnicode_InternFromString("PATCH_RECORD");
    s_record = PyUnicode_InternFromString("record");
    s_create_record = PyUnicode_InternFromString("CREATE_RECORD");
    if (s_id == NULL || s_rec == NULL || s_command == NULL || s_state == NULL ||
        s_fields == NULL || s_patch_record == NULL || s_record == NULL || s_create_record == NULL)
        return NULL;
    stale = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
    if (kw_strict == NULL || s_get_sync == NULL || s_get_retried == NULL || s_get == NULL ||
        stale == NULL)
        return NULL;
    if (PyType_Ready(&CoreType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&CoreType);
    if (PyModule_AddObject(m, "ReaderCore", (PyObject *)&CoreType) < 0) {
        Py_DECREF(&CoreType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(stale);
    if (PyModule_AddObject(m, "STALE", stale) < 0) {
        Py_DECREF(stale);
        Py_DECREF(m);
        return NULL;
    }
    if (getrec_init(m) < 0 || onewrite_init(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
