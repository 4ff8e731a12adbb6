/* The arena writer's per-record loops in C (issue 17): the twin of shm/blocks.py.
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
#include <stdint.h>
#include <string.h>

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

/* --- place(mm, off, seq, prefix, ids, datas, i, j, tdict, raw_type) -> (off, rows) ---
 * Writes the blocks of records i..j-1 from off on, indexes them in tdict
 * (id -> (off, asize, pstart, pend, hcrc, crc, pos, seq), pos = the record's index) and
 * returns the next offset and their checkpoint rows' msgpack, [id, pstart, pend, hcrc,
 * crc, pos, off] each, back to back. The records are ones measure() accepted. */

static PyObject *place(PyObject *self, PyObject *args) {
    PyObject *mm, *prefix, *all_ids, *all_datas, *tdict, *raw_type;
    PyObject *ids = NULL, *datas = NULL, *seqo = NULL, *rows = NULL;
    Py_ssize_t off, i, j;
    long long seq;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "OnLO!O!O!nnO!O", &mm, &off, &seq, &PyBytes_Type, &prefix,
                          &PyList_Type, &all_ids, &PyList_Type, &all_datas, &i, &j, &PyDict_Type,
                          &tdict, &raw_type))
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
    seqo = PyLong_FromLongLong(seq);
    rows = PyBytes_FromStringAndSize(NULL, cap);
    if (seqo == NULL || rows == NULL) goto fail;
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
        PyObject *e = PyTuple_New(8);
        if (e == NULL) goto fail;
        PyObject *v[7] = {PyLong_FromSsize_t(off),       PyLong_FromSsize_t(asize),
                          PyLong_FromSsize_t(pstart),    PyLong_FromSsize_t(pend),
                          PyLong_FromUnsignedLong(hcrc), PyLong_FromUnsignedLong(crc),
                          PyLong_FromSsize_t(i + r)};
        int bad = 0;
        for (int k = 0; k < 7; k++) {
            if (v[k] == NULL) bad = 1;
            PyTuple_SET_ITEM(e, k, v[k]);
        }
        Py_INCREF(seqo);
        PyTuple_SET_ITEM(e, 7, seqo);
        if (bad || PyDict_SetItem(tdict, rid, e) < 0) {
            Py_DECREF(e);
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
    PyBuffer_Release(&view);
    Py_DECREF(seqo);
    Py_DECREF(ids);
    Py_DECREF(datas);
    if (_PyBytes_Resize(&rows, (Py_ssize_t)(w - (unsigned char *)PyBytes_AS_STRING(rows))) < 0)
        return NULL;
    return Py_BuildValue("(nN)", off, rows);
fail:
    PyBuffer_Release(&view);
    Py_XDECREF(ids);
    Py_XDECREF(datas);
    Py_XDECREF(seqo);
    Py_XDECREF(rows);
    return NULL;
}

/* --- valid(mm, start, end, hcrc, crc) -> bytes | None: a reader's get check ---
 * The payload mm[start:end] copied out, then its CRC (continued from hcrc) computed over
 * the copy and compared: the bytes if they match, else None (a torn or reused block). */

static PyObject *valid(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer view;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "valid(mm, start, end, hcrc, crc)");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t end = PyLong_AsSsize_t(args[2]);
    if (end == -1 && PyErr_Occurred()) return NULL;
    unsigned long hcrc = PyLong_AsUnsignedLong(args[3]);
    if (hcrc == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    unsigned long crc = PyLong_AsUnsignedLong(args[4]);
    if (crc == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    if (hcrc > 0xFFFFFFFFUL || crc > 0xFFFFFFFFUL) Py_RETURN_NONE; /* no CRC-32 matches */
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    if (start < 0 || end < start || end > view.len) {
        /* a damaged entry: no match, as the Python twin's short slice, so the reader
         * retries and reports SnapshotExpired rather than a ValueError */
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }
    PyObject *raw = PyBytes_FromStringAndSize((const char *)view.buf + start, end - start);
    PyBuffer_Release(&view);
    if (raw == NULL) return NULL;
    if (crc32_update((uint32_t)hcrc, (const unsigned char *)PyBytes_AS_STRING(raw),
                     (size_t)(end - start)) == (uint32_t)crc)
        return raw;
    Py_DECREF(raw);
    Py_RETURN_NONE;
}

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

static PyMethodDef methods[] = {
    {"valid", (PyCFunction)(void (*)(void))valid, METH_FASTCALL, "A reader's get check."},
    {"prepare", prepare, METH_VARARGS, "Build commit puts' blocks (see shm/blocks.py)."},
    {"measure", measure, METH_VARARGS, "Check and size a loaded table (see shm/blocks.py)."},
    {"place", place, METH_VARARGS, "Write, index and checkpoint loaded records."},
    {"flat_ids", (PyCFunction)(void (*)(void))flat_ids, METH_FASTCALL,
     "The ids of a load of flat records (see shm/blocks.py)."},
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
    return PyModule_Create(&module);
}
