/* The parser's byte scans, compiled: header fields, multipart delimiters, CRLF line ends, base64 lines, UTF-8.

   Each function gives exactly what its Python twin in _scans.py gives (property tests hold them to each
   other); _scans.py uses the twins when this module was not built. Only bytes are taken: the parser's
   buffers always are. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static int
is_name_byte(unsigned char c)
{
    /* RFC 5322 field name: printable ASCII except the colon. */
    return c >= 0x21 && c <= 0x7E && c != ':';
}

static int
is_strip_space(unsigned char c)
{
    /* What bytes.strip() removes: ASCII white space. */
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\x0b' || c == '\x0c';
}

static int
bounds(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, const char *name, Py_ssize_t *start,
       Py_ssize_t *end)
{
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments", name, want);
        return -1;
    }
    if (!PyBytes_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "%s() takes bytes", name);
        return -1;
    }
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    *start = PyLong_AsSsize_t(args[1]);
    if (*start == -1 && PyErr_Occurred())
        return -1;
    *end = PyLong_AsSsize_t(args[2]);
    if (*end == -1 && PyErr_Occurred())
        return -1;
    /* A negative offset is refused (the parser never passes one); an end past the buffer is clamped, as
       slicing clamps it, so that nothing is read beyond the buffer whatever the caller asks. */
    if (*start < 0 || *end < 0) {
        PyErr_Format(PyExc_ValueError, "%s(): negative offset", name);
        return -1;
    }
    if (*end > size)
        *end = size;
    return 0;
}

/* A field's value, unfolded: each line's trailing CR dropped, a continuation's leading tab read as a
   space, the lines joined, white space stripped at both ends. A value of one line is only stripped. */
static PyObject *
unfold(const unsigned char *value, Py_ssize_t length)
{
    const unsigned char *newline = memchr(value, '\n', (size_t)length);
    if (newline == NULL) {
        Py_ssize_t lo = 0, hi = length;
        while (lo < hi && is_strip_space(value[lo]))
            lo++;
        while (hi > lo && is_strip_space(value[hi - 1]))
            hi--;
        return PyBytes_FromStringAndSize((const char *)value + lo, hi - lo);
    }
    PyObject *joined = PyBytes_FromStringAndSize(NULL, length);
    if (joined == NULL)
        return NULL;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(joined);
    Py_ssize_t used = 0, pos = 0;
    int first = 1;
    while (1) {
        const unsigned char *stop = memchr(value + pos, '\n', (size_t)(length - pos));
        Py_ssize_t line_end = stop ? stop - value : length;
        Py_ssize_t line_start = pos;
        Py_ssize_t cut = line_end;
        if (cut > line_start && value[cut - 1] == '\r')
            cut--;
        if (!first && cut > line_start && value[line_start] == '\t') {
            out[used++] = ' ';
            line_start++;
        }
        memcpy(out + used, value + line_start, (size_t)(cut - line_start));
        used += cut - line_start;
        first = 0;
        if (stop == NULL)
            break;
        pos = line_end + 1;
    }
    Py_ssize_t lo = 0, hi = used;
    while (lo < hi && is_strip_space(out[lo]))
        lo++;
    while (hi > lo && is_strip_space(out[hi - 1]))
        hi--;
    PyObject *result = PyBytes_FromStringAndSize((const char *)out + lo, hi - lo);
    Py_DECREF(joined);
    return result;
}

/* well_formed_fields(buf, start, end): the header block's fields as (lower-case name, unfolded value), when
   every line is a field or its continuation; None otherwise. */
static PyObject *
scan_fields(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t start, end;
    if (bounds(args, nargs, 3, "well_formed_fields", &start, &end) < 0)
        return NULL;
    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    PyObject *fields = PyList_New(0);
    if (fields == NULL)
        return NULL;
    Py_ssize_t pos = start;
    while (pos < end) {
        Py_ssize_t name_end = pos;
        while (name_end < end && is_name_byte(buf[name_end]))
            name_end++;
        if (name_end == pos)
            goto not_well_formed;
        Py_ssize_t colon = name_end;
        while (colon < end && (buf[colon] == ' ' || buf[colon] == '\t'))
            colon++;
        if (colon >= end || buf[colon] != ':')
            goto not_well_formed;
        /* The value: to the end of the line, and every following line that starts with a space or tab. */
        Py_ssize_t value_start = colon + 1, cursor = value_start, value_end;
        while (1) {
            const unsigned char *newline = memchr(buf + cursor, '\n', (size_t)(end - cursor));
            if (newline == NULL) {
                value_end = cursor = end;
                break;
            }
            Py_ssize_t at = newline - buf;
            if (at + 1 < end && (buf[at + 1] == ' ' || buf[at + 1] == '\t')) {
                cursor = at + 1;
                continue;
            }
            value_end = at;
            cursor = at + 1;
            break;
        }
        PyObject *name = PyUnicode_New(name_end - pos, 127);
        if (name == NULL)
            goto error;
        Py_UCS1 *letters = PyUnicode_1BYTE_DATA(name);
        for (Py_ssize_t i = pos; i < name_end; i++) {
            unsigned char c = buf[i];
            letters[i - pos] = (c >= 'A' && c <= 'Z') ? (Py_UCS1)(c + 32) : (Py_UCS1)c;
        }
        PyObject *value = unfold(buf + value_start, value_end - value_start);
        if (value == NULL) {
            Py_DECREF(name);
            goto error;
        }
        PyObject *pair = PyTuple_Pack(2, name, value);
        Py_DECREF(name);
        Py_DECREF(value);
        if (pair == NULL)
            goto error;
        int failed = PyList_Append(fields, pair);
        Py_DECREF(pair);
        if (failed)
            goto error;
        pos = cursor;
    }
    return fields;
not_well_formed:
    Py_DECREF(fields);
    Py_RETURN_NONE;
error:
    Py_DECREF(fields);
    return NULL;
}

static int
append_part(PyObject *parts, Py_ssize_t start, Py_ssize_t end)
{
    PyObject *pair = Py_BuildValue("(nn)", start, end);
    if (pair == NULL)
        return -1;
    int failed = PyList_Append(parts, pair);
    Py_DECREF(pair);
    return failed;
}

/* split_multipart(buf, start, end, boundary): the body parts of a multipart as (start, end) offsets, and
   whether the closing delimiter was seen. */
static PyObject *
scan_parts(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t start, end;
    if (bounds(args, nargs, 4, "split_multipart", &start, &end) < 0)
        return NULL;
    if (!PyBytes_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "split_multipart() takes a bytes boundary");
        return NULL;
    }
    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t blen = PyBytes_GET_SIZE(args[3]);
    Py_ssize_t size = blen + 2;
    unsigned char *delimiter = PyMem_Malloc((size_t)size);
    if (delimiter == NULL)
        return PyErr_NoMemory();
    delimiter[0] = delimiter[1] = '-';
    memcpy(delimiter + 2, PyBytes_AS_STRING(args[3]), (size_t)blen);
    PyObject *parts = PyList_New(0);
    if (parts == NULL) {
        PyMem_Free(delimiter);
        return NULL;
    }
    Py_ssize_t part_start = -1, pos = start;
    int closed = 0;
    while (pos <= end - size) {
        /* The next delimiter at the start of a line: every one begins with '-', a byte that base64 never
           holds, so looking for that byte skips an attachment at memchr's speed. */
        const unsigned char *dash = memchr(buf + pos, '-', (size_t)(end - size + 1 - pos));
        if (dash == NULL)
            break;
        Py_ssize_t found = dash - buf;
        if ((found > start && buf[found - 1] != '\n') || memcmp(dash, delimiter, (size_t)size) != 0) {
            pos = found + 1;
            continue;
        }
        Py_ssize_t cursor = found + size;
        int closing = cursor + 2 <= end && buf[cursor] == '-' && buf[cursor + 1] == '-';
        if (closing)
            cursor += 2;
        while (cursor < end && (buf[cursor] == ' ' || buf[cursor] == '\t'))
            cursor++;
        if (cursor < end && buf[cursor] == '\r')
            cursor++;
        if (cursor < end) {
            if (buf[cursor] != '\n') {
                pos = found + 1; /* "--boundary" was only the start of a longer line */
                continue;
            }
            cursor++;
        }
        if (part_start >= 0) {
            Py_ssize_t part_end = found > start ? found - 1 : found;
            if (part_end > part_start && buf[part_end - 1] == '\r')
                part_end--;
            if (append_part(parts, part_start, part_end > part_start ? part_end : part_start) < 0)
                goto error;
        }
        if (closing) {
            closed = 1;
            break;
        }
        part_start = pos = cursor;
    }
    if (!closed && part_start >= 0 && append_part(parts, part_start, end) < 0)
        goto error;
    PyMem_Free(delimiter);
    PyObject *result = Py_BuildValue("(NO)", parts, closed ? Py_True : Py_False);
    return result;
error:
    PyMem_Free(delimiter);
    Py_DECREF(parts);
    return NULL;
}

/* lf_lines(data): data with the CR of every CRLF dropped; None when a CR does not end a line. */
static PyObject *
scan_lf_lines(PyObject *module, PyObject *data)
{
    if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "lf_lines() takes bytes");
        return NULL;
    }
    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t size = PyBytes_GET_SIZE(data), crs = 0;
    const unsigned char *cr = memchr(buf, '\r', (size_t)size);
    for (const unsigned char *at = cr; at != NULL; at = memchr(at + 1, '\r', (size_t)(buf + size - at - 1))) {
        if (at + 1 >= buf + size || at[1] != '\n')
            Py_RETURN_NONE;
        crs++;
    }
    if (crs == 0)
        return Py_NewRef(data);
    PyObject *result = PyBytes_FromStringAndSize(NULL, size - crs);
    if (result == NULL)
        return NULL;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    const unsigned char *from = buf;
    for (const unsigned char *at = cr; at != NULL; at = memchr(at + 1, '\r', (size_t)(buf + size - at - 1))) {
        memcpy(out, from, (size_t)(at - from));
        out += at - from;
        from = at + 1;
    }
    memcpy(out, from, (size_t)(buf + size - from));
    return result;
}

/* without_line_ends(buf, start, end): buf[start:end] without its CR and LF bytes (base64 before decoding). */
static PyObject *
scan_without_line_ends(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t start, end;
    if (bounds(args, nargs, 3, "without_line_ends", &start, &end) < 0)
        return NULL;
    if (start > end)
        start = end;
    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    PyObject *result = PyBytes_FromStringAndSize(NULL, end - start);
    if (result == NULL)
        return NULL;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    Py_ssize_t used = 0, pos = start;
    while (pos < end) {
        /* Line by line, each copied without its CRs: memchr and memcpy, not a byte at a time. */
        const unsigned char *newline = memchr(buf + pos, '\n', (size_t)(end - pos));
        Py_ssize_t stop = newline ? newline - buf : end;
        while (pos < stop) {
            const unsigned char *cr = memchr(buf + pos, '\r', (size_t)(stop - pos));
            Py_ssize_t cut = cr ? cr - buf : stop;
            memcpy(out + used, buf + pos, (size_t)(cut - pos));
            used += cut - pos;
            pos = cut + 1;
        }
        pos = stop + 1;
    }
    if (used != end - start && _PyBytes_Resize(&result, used) < 0)
        return NULL;
    return result;
}

/* utf8_text(data): data decoded as strict UTF-8, exactly as data.decode("utf-8").

   A string that is not all ASCII keeps its UTF-8 form in a cache of its own (PyCompactUnicodeObject.utf8),
   filled the first time someone asks for it: the record's JSON asks for every body, and CPython then
   encodes the text again a character at a time, a tenth of a message's instructions. Strict UTF-8 decodes
   to text whose encoding is exactly the bytes decoded, so the cache is filled here with a copy of them,
   allocated as CPython allocates it (it frees the copy with the string). Done only on the interpreters
   whose layout this was written against, on a fresh string of our own (a short one may be a shared
   singleton), never on a free-threaded build; anywhere else the text is decoded and nothing more. */
static PyObject *
scan_utf8_text(PyObject *module, PyObject *data)
{
    if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "utf8_text() takes bytes");
        return NULL;
    }
    const char *buf = PyBytes_AS_STRING(data);
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    PyObject *text = PyUnicode_DecodeUTF8(buf, size, "strict");
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030F0000 && !defined(Py_GIL_DISABLED)
    /* Only a fresh string of our own: a short one may be a shared singleton. */
    if (text != NULL && size >= 256 && Py_REFCNT(text) == 1 && PyUnicode_IS_COMPACT(text)
        && !PyUnicode_IS_ASCII(text) && ((PyCompactUnicodeObject *)text)->utf8 == NULL) {
        char *copy = PyObject_Malloc((size_t)size + 1);
        if (copy != NULL) { /* without memory, CPython encodes it later, as it would have */
            memcpy(copy, buf, (size_t)size);
            copy[size] = '\0';
            ((PyCompactUnicodeObject *)text)->utf8 = copy;
            ((PyCompactUnicodeObject *)text)->utf8_length = size;
        }
    }
#endif
    return text;
}

static PyMethodDef scan_methods[] = {
    {"well_formed_fields", (PyCFunction)(void (*)(void))scan_fields, METH_FASTCALL,
     "well_formed_fields(buf, start, end): a header block's (name, value) pairs; None if a line is no field."},
    {"split_multipart", (PyCFunction)(void (*)(void))scan_parts, METH_FASTCALL,
     "split_multipart(buf, start, end, boundary): ([(start, end), ...], closed) of a multipart body."},
    {"without_line_ends", (PyCFunction)(void (*)(void))scan_without_line_ends, METH_FASTCALL,
     "without_line_ends(buf, start, end): buf[start:end] without its CR and LF bytes."},
    {"utf8_text", (PyCFunction)scan_utf8_text, METH_O, "utf8_text(data): data.decode('utf-8'), its UTF-8 kept."},
    {"lf_lines", (PyCFunction)scan_lf_lines, METH_O,
     "lf_lines(data): data with CRLF made LF, or None when a CR does not end a line."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef scans_module = {
    PyModuleDef_HEAD_INIT, "_scans_c", "The parser's byte scans, compiled.", 0, scan_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__scans_c(void)
{
    return PyModuleDef_Init(&scans_module);
}
