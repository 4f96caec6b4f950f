# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The usual JSON data envelope scanned byte by byte in C: canonical bytes, COPY rows and
rollup buckets of every sample, without a Python object per sample.

Compiled at install time (``setup.py``); ``ingest._fastjson`` uses it when it is importable
and its own Python loop otherwise. It reads a strict subset of JSON: anything outside that
subset (an escape in a string, a nested object, a number it would have to round twice, a
byte that is not where the compact form puts it) makes :func:`scan` return None, and the
caller hands the payload to the full decoder, which decides. What it accepts, it must decode
exactly as ``gateway.protocol`` does: tests/ingest/test_fastjson.py holds the two to the same
bytes, also on adversarial inputs.

Only the top-level object has keys (samples are arrays), so a duplicate key is a field seen
twice there; an unknown field is declined too.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.math cimport isfinite
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset


cdef extern from "Python.h":
    double PyOS_string_to_double(const char *s, char **endptr,
                                 PyObject *overflow_exception) except? -1.0


cdef int64_t PG_EPOCH_US = 946_684_800_000_000
cdef int64_t MINUTE_US = 60_000_000
cdef int64_t DAY_US = 86_400_000_000
cdef int64_t MIN_TS = 946_684_800_000_000
cdef int64_t MAX_TS = 4_102_444_800_000_000
cdef int64_t MAX_EXACT_INT = 1 << 53
cdef Py_ssize_t MAX_SAMPLES = 10_000
cdef Py_ssize_t MAX_TEXT_BYTES = 4096
#: the constants above, which gateway.protocol and ingest._rows define too (a test compares)
LIMITS = {
    "PG_EPOCH_US": PG_EPOCH_US, "MINUTE_US": MINUTE_US, "DAY_US": DAY_US, "MIN_TS": MIN_TS,
    "MAX_TS": MAX_TS, "MAX_EXACT_INT": MAX_EXACT_INT, "MAX_SAMPLES": MAX_SAMPLES,
    "MAX_TEXT_BYTES": MAX_TEXT_BYTES,
}

# the fields of a data envelope, one bit each
cdef enum:
    F_V = 1
    F_KIND = 2
    F_GATEWAY = 4
    F_SEQ = 8
    F_PREV = 16
    F_CREATED = 32
    F_SIG = 64
    F_DEVICE = 128
    F_SAMPLES = 256
    F_ALL = 511

cdef enum:
    V_NULL = 0
    V_NUMBER = 1
    V_BOOL = 2
    V_TEXT = 3


class Decline(Exception):
    """Not an envelope this scanner decodes: the full decoder decides."""


cdef struct Buf:
    char *data
    Py_ssize_t size
    Py_ssize_t cap


cdef int buf_grow(Buf *b, Py_ssize_t more) except -1:
    cdef Py_ssize_t cap
    cdef char *data
    if b.size + more <= b.cap:
        return 0
    cap = b.cap * 2 if b.cap else 4096
    while cap < b.size + more:
        cap *= 2
    data = <char *>PyMem_Realloc(b.data, cap)
    if data == NULL:
        raise MemoryError()
    b.data = data
    b.cap = cap
    return 0


cdef inline void put_u8(Buf *b, uint64_t v) noexcept:
    b.data[b.size] = <char>(v & 0xFF)
    b.size += 1


cdef inline void put_be(Buf *b, uint64_t v, int n) noexcept:
    cdef int i
    for i in range(n):
        b.data[b.size + i] = <char>((v >> (8 * (n - 1 - i))) & 0xFF)
    b.size += n


cdef inline void put_double(Buf *b, double d) noexcept:
    cdef uint64_t bits
    memcpy(&bits, &d, 8)
    put_be(b, bits, 8)


cdef inline void put_bytes(Buf *b, const char *p, Py_ssize_t n) noexcept:
    memcpy(b.data + b.size, p, n)
    b.size += n


# one rollup bucket: (series, minute) and its fold
cdef struct Bucket:
    int64_t sid
    int64_t minute
    int64_t count
    int64_t numeric
    double total
    double low
    double high


cdef struct Scanner:
    const char *p
    const char *end


cdef inline void skip_ws(Scanner *s) noexcept:
    while s.p < s.end and (s.p[0] == b' ' or s.p[0] == b'\t' or s.p[0] == b'\n'
                           or s.p[0] == b'\r'):
        s.p += 1


cdef inline int expect(Scanner *s, char c) except -1:
    skip_ws(s)
    if s.p >= s.end or s.p[0] != c:
        raise Decline()
    s.p += 1
    return 0


cdef int string_span(Scanner *s, const char **start, Py_ssize_t *length, bint *ascii) except -1:
    """A string without escapes or control characters; ``s.p`` at its opening quote."""
    cdef const char *p
    cdef uint8_t c
    cdef bint only_ascii = True
    skip_ws(s)
    if s.p >= s.end or s.p[0] != b'"':
        raise Decline()
    p = s.p + 1
    start[0] = p
    while True:
        if p >= s.end:
            raise Decline()
        c = <uint8_t>p[0]
        if c == b'"':
            break
        if c == b'\\' or c < 0x20:
            raise Decline()
        if c >= 0x80:
            only_ascii = False
        p += 1
    length[0] = p - start[0]
    ascii[0] = only_ascii
    s.p = p + 1
    return 0


cdef object text(const char *start, Py_ssize_t length):
    """The str of UTF-8 bytes; decline bytes that are not UTF-8."""
    try:
        return PyUnicode_DecodeUTF8(start, length, NULL)
    except UnicodeDecodeError:
        raise Decline() from None


cdef int number_span(Scanner *s, const char **start, Py_ssize_t *length,
                     bint *is_float) except -1:
    """A JSON number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?"""
    cdef const char *p
    cdef const char *end = s.end
    skip_ws(s)
    p = s.p
    start[0] = p
    is_float[0] = False
    if p < end and p[0] == b'-':
        p += 1
    if p >= end:
        raise Decline()
    if p[0] == b'0':
        p += 1
    elif b'1' <= p[0] <= b'9':
        while p < end and b'0' <= p[0] <= b'9':
            p += 1
    else:
        raise Decline()
    if p < end and p[0] == b'.':
        is_float[0] = True
        p += 1
        if p >= end or not (b'0' <= p[0] <= b'9'):
            raise Decline()
        while p < end and b'0' <= p[0] <= b'9':
            p += 1
    if p < end and (p[0] == b'e' or p[0] == b'E'):
        is_float[0] = True
        p += 1
        if p < end and (p[0] == b'+' or p[0] == b'-'):
            p += 1
        if p >= end or not (b'0' <= p[0] <= b'9'):
            raise Decline()
        while p < end and b'0' <= p[0] <= b'9':
            p += 1
    length[0] = p - start[0]
    s.p = p
    return 0


cdef int64_t small_int(const char *start, Py_ssize_t length) except? -1:
    """An integer literal of at most 17 digits (a sign aside) as int64; decline longer ones."""
    cdef int64_t value = 0
    cdef bint negative = start[0] == b'-'
    cdef Py_ssize_t i = 1 if negative else 0
    if length - i > 17:
        raise Decline()
    while i < length:
        value = value * 10 + (start[i] - 48)  # '0'
        i += 1
    return -value if negative else value


cdef double[23] POWERS = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
]


cdef double float_of(const char *start, Py_ssize_t length) except? -1.0:
    """As ``float()`` of the literal (which the strict decoder uses): correctly rounded.

    A literal without exponent whose digits make an integer below 2**53, with at most 22
    decimals, is that integer divided by a power of ten that a double holds exactly: one
    IEEE division, correctly rounded (Clinger's fast path, as in every strtod). Others go to
    Python's own ``PyOS_string_to_double``.
    """
    cdef char buf[64]
    cdef char *stop
    cdef double value
    cdef uint64_t mantissa = 0
    cdef int decimals = -1
    cdef Py_ssize_t i = 1 if start[0] == b'-' else 0
    cdef char c
    if length <= 17:
        while i < length:
            c = start[i]
            if c == b'.':
                decimals = 0
            elif b'0' <= c <= b'9':
                mantissa = mantissa * 10 + <uint64_t>(c - 48)  # '0'
                if decimals >= 0:
                    decimals += 1
            else:
                break  # an exponent
            i += 1
        if i == length and decimals >= 0 and mantissa < (<uint64_t>1 << 53):
            value = <double>mantissa / POWERS[decimals]
            return -value if start[0] == b'-' else value
    if length >= 64:
        raise Decline()
    memcpy(buf, start, length)
    buf[length] = 0
    value = PyOS_string_to_double(buf, &stop, NULL)
    if stop != buf + length or not isfinite(value):
        raise Decline()
    return value


cdef object head_value(Scanner *s):
    """A field of the envelope other than samples: a string or an integer, else declined
    (the full decoder says what is wrong with anything else)."""
    cdef const char *start
    cdef Py_ssize_t length
    cdef bint flag
    skip_ws(s)
    if s.p >= s.end:
        raise Decline()
    if s.p[0] == b'"':
        string_span(s, &start, &length, &flag)
        return text(start, length)
    number_span(s, &start, &length, &flag)
    if flag or length > 20:
        raise Decline()
    return int(PyBytes_FromStringAndSize(start, length))


cdef int field_bit(const char *k, Py_ssize_t n) noexcept:
    if n == 1 and k[0] == b'v':
        return F_V
    if n == 4 and memcmp4(k, b"kind"):
        return F_KIND
    if n == 7 and memcmp_n(k, b"gateway", 7):
        return F_GATEWAY
    if n == 3 and memcmp_n(k, b"seq", 3):
        return F_SEQ
    if n == 4 and memcmp4(k, b"prev"):
        return F_PREV
    if n == 7 and memcmp_n(k, b"created", 7):
        return F_CREATED
    if n == 3 and memcmp_n(k, b"sig", 3):
        return F_SIG
    if n == 6 and memcmp_n(k, b"device", 6):
        return F_DEVICE
    if n == 7 and memcmp_n(k, b"samples", 7):
        return F_SAMPLES
    return 0


cdef inline bint memcmp4(const char *a, const char *b) noexcept:
    return memcmp_n(a, b, 4)


cdef inline bint memcmp_n(const char *a, const char *b, Py_ssize_t n) noexcept:
    cdef Py_ssize_t i
    for i in range(n):
        if a[i] != b[i]:
            return False
    return True


# a tag already looked up in this envelope: where its bytes are in the payload, its series
cdef struct TagSlot:
    const char *start
    Py_ssize_t length
    int64_t sid


cdef int64_t NO_SID = -(1 << 40)


cdef inline uint64_t tag_hash(const char *p, Py_ssize_t n) noexcept:
    cdef uint64_t h = 14695981039346656037ULL
    cdef Py_ssize_t i
    for i in range(n):
        h = (h ^ <uint8_t>p[i]) * 1099511628211ULL
    return h


cdef int64_t tag_of(_State st, const char *p, Py_ssize_t n) noexcept:
    """The series id of a tag seen before in this envelope, or NO_SID."""
    cdef Py_ssize_t mask = st.nslots - 1
    cdef Py_ssize_t i = <Py_ssize_t>(tag_hash(p, n) & <uint64_t>mask)
    cdef TagSlot *slot
    while True:
        slot = &st.tags[i]
        if slot.start == NULL:
            return NO_SID
        if slot.length == n and memcmp_n(slot.start, p, n):
            return slot.sid
        i = (i + 1) & mask


cdef void remember_tag(_State st, const char *p, Py_ssize_t n, int64_t sid) noexcept:
    cdef Py_ssize_t mask = st.nslots - 1
    cdef Py_ssize_t i = <Py_ssize_t>(tag_hash(p, n) & <uint64_t>mask)
    while st.tags[i].start != NULL:
        i = (i + 1) & mask
    st.tags[i].start = p
    st.tags[i].length = n
    st.tags[i].sid = sid


cdef class _State:
    """Everything :func:`scan` builds, freed however it ends."""

    cdef Buf canonical
    cdef Buf rows
    cdef Bucket *buckets
    cdef Py_ssize_t nbuckets
    cdef Py_ssize_t cap_buckets
    cdef int32_t *slots
    cdef Py_ssize_t nslots
    cdef TagSlot *tags

    def __dealloc__(self):
        PyMem_Free(self.canonical.data)
        PyMem_Free(self.rows.data)
        PyMem_Free(self.buckets)
        PyMem_Free(self.slots)
        PyMem_Free(self.tags)



cdef Bucket *bucket_of(_State st, int64_t sid, int64_t minute, set days) except NULL:
    """The rollup bucket of (series, minute), made on first use (its day added to ``days``)."""
    cdef uint64_t h = (<uint64_t>sid * 0x9E3779B97F4A7C15ULL) ^ (<uint64_t>minute * 0xC2B2AE3D27D4EB4FULL)
    cdef Py_ssize_t mask = st.nslots - 1
    cdef Py_ssize_t i = <Py_ssize_t>((h ^ (h >> 29)) & <uint64_t>mask)
    cdef int32_t at
    cdef Bucket *b
    while True:
        at = st.slots[i]
        if at < 0:
            break
        b = &st.buckets[at]
        if b.sid == sid and b.minute == minute:
            return b
        i = (i + 1) & mask
    # a table of at least twice as many slots as samples never fills
    at = <int32_t>st.nbuckets
    st.slots[i] = at
    st.nbuckets += 1
    b = &st.buckets[at]
    b.sid = sid
    b.minute = minute
    b.count = 0
    b.numeric = 0
    b.total = 0.0
    b.low = 0.0
    b.high = 0.0
    days.add((minute + PG_EPOCH_US) // DAY_US)
    return b


#: bytes a sample takes at least: ["t",946684800000000,0,"bad"] and a comma
cdef Py_ssize_t MIN_SAMPLE_BYTES = 28


def scan(bytes payload, dict series, dict tags, qualities):
    """(the envelope's fields with its first sample only, the canonical bytes of all its
    samples, their COPY rows, rollup, days, sample count, newest ts), or None to decline.

    ``tags``: tags the full decoder accepted (only those are taken); ``series``: tag → series
    id; ``qualities``: the quality labels, as bytes, in the order of their codes.
    """
    try:
        return _scan(payload, series, tags, qualities)
    except (Decline, OverflowError):  # OverflowError: a series id that is no int4
        return None


cdef object _scan(bytes payload, dict series, dict tags, qualities):
    cdef Scanner s
    cdef const char *start
    cdef Py_ssize_t length
    cdef bint flag
    cdef int seen = 0
    cdef int bit
    cdef dict doc = {}
    cdef _State st = _State()
    cdef list labels = [bytes(label) for label in qualities]
    cdef Py_ssize_t nlabels = len(labels)
    s.p = PyBytes_AS_STRING(payload)
    s.end = s.p + PyBytes_GET_SIZE(payload)
    expect(&s, b'{')
    result = None
    while True:
        string_span(&s, &start, &length, &flag)
        bit = field_bit(start, length)
        if bit == 0 or seen & bit:
            raise Decline()
        seen |= bit
        expect(&s, b':')
        if bit == F_SAMPLES:
            result = _samples(&s, st, series, tags, labels, nlabels)
            doc["samples"] = [result[0]]
        else:
            doc[PyBytes_FromStringAndSize(start, length).decode()] = head_value(&s)
        skip_ws(&s)
        if s.p < s.end and s.p[0] == b',':
            s.p += 1
            continue
        expect(&s, b'}')
        break
    skip_ws(&s)
    if s.p != s.end or seen != F_ALL:
        raise Decline()
    return (doc, *result[1:])


cdef tuple _samples(Scanner *s, _State st, dict series, dict tags, list labels,
                    Py_ssize_t nlabels):
    cdef const char *start
    cdef const char *tag_start
    cdef Py_ssize_t length, tag_length, upper, i
    cdef bint flag, is_float
    cdef int64_t ts, pg_ts, minute, sid, iv, newest = 0
    cdef Py_ssize_t count = 0
    cdef int quality, kind
    cdef double value
    cdef Bucket *b
    cdef set days = set()
    cdef object first = None
    cdef object first_tag = None
    cdef object pyvalue
    cdef object sid_obj
    cdef bytes label
    cdef char c
    cdef const char *text_start
    cdef Py_ssize_t text_length
    expect(s, b'[')
    # at most this many samples fit in the rest of the payload (a tag of one byte, a ts of 15
    # digits...): the tables below never fill; an envelope of more is declined
    upper = (s.end - s.p) // MIN_SAMPLE_BYTES + 1
    st.cap_buckets = min(upper, MAX_SAMPLES + 1)
    st.buckets = <Bucket *>PyMem_Malloc(st.cap_buckets * sizeof(Bucket))
    st.nslots = 16
    while st.nslots < 2 * st.cap_buckets:
        st.nslots *= 2
    st.slots = <int32_t *>PyMem_Malloc(st.nslots * sizeof(int32_t))
    st.tags = <TagSlot *>PyMem_Malloc(st.nslots * sizeof(TagSlot))
    if st.buckets == NULL or st.slots == NULL or st.tags == NULL:
        raise MemoryError()
    memset(st.tags, 0, st.nslots * sizeof(TagSlot))
    memset(st.slots, 0xFF, st.nslots * sizeof(int32_t))
    while True:
        if count >= MAX_SAMPLES or count >= st.cap_buckets:
            raise Decline()
        expect(s, b'[')
        # the tag: one the full decoder accepted, with a series id
        string_span(s, &tag_start, &tag_length, &flag)
        sid = tag_of(st, tag_start, tag_length)
        if sid == NO_SID:
            tag = text(tag_start, tag_length)
            if tag not in tags:
                raise Decline()
            sid_obj = series.get(tag)
            if type(sid_obj) is not int:
                raise Decline()
            sid = sid_obj
            if not -2147483648 <= sid <= 2147483647:
                raise Decline()
            remember_tag(st, tag_start, tag_length, sid)
        if count == 0:
            first_tag = text(tag_start, tag_length)
        expect(s, b',')
        number_span(s, &start, &length, &is_float)
        if is_float:
            raise Decline()
        ts = small_int(start, length)
        if not MIN_TS <= ts < MAX_TS:
            raise Decline()
        expect(s, b',')
        # the value
        skip_ws(s)
        if s.p >= s.end:
            raise Decline()
        kind = V_NUMBER
        value = 0.0
        text_start = NULL
        text_length = 0
        c = s.p[0]
        if c == b'"':
            kind = V_TEXT
            string_span(s, &start, &length, &flag)
            if length > MAX_TEXT_BYTES:
                raise Decline()
            text_start, text_length = start, length
            # text() declines bytes that are not UTF-8; ASCII needs no check
            if not flag or count == 0:
                pyvalue = text(start, length)
        elif c == b't' or c == b'f' or c == b'n':
            if s.end - s.p >= 4 and memcmp4(s.p, b"true"):
                kind, value = V_BOOL, 1.0
                pyvalue = True
                s.p += 4
            elif s.end - s.p >= 5 and memcmp_n(s.p, b"false", 5):
                kind, value = V_BOOL, 0.0
                pyvalue = False
                s.p += 5
            elif s.end - s.p >= 4 and memcmp4(s.p, b"null"):
                kind = V_NULL
                pyvalue = None
                s.p += 4
            else:
                raise Decline()
        else:
            number_span(s, &start, &length, &is_float)
            if is_float:
                value = float_of(start, length)
                if count == 0:
                    pyvalue = value
            else:
                iv = small_int(start, length)
                if iv > MAX_EXACT_INT or iv < -MAX_EXACT_INT:
                    raise Decline()
                value = <double>iv
                if count == 0:
                    pyvalue = iv
        expect(s, b',')
        string_span(s, &start, &length, &flag)
        quality = -1
        for i in range(nlabels):
            label = labels[i]
            if PyBytes_GET_SIZE(label) == length and memcmp_n(
                PyBytes_AS_STRING(label), start, length
            ):
                quality = <int>i
                break
        if quality < 0:
            raise Decline()
        expect(s, b']')
        if count == 0:
            first = [first_tag, ts, pyvalue, PyBytes_FromStringAndSize(start, length).decode()]

        # canonical: tag (u16 length ‖ UTF-8), ts, quality, value type, value
        buf_grow(&st.canonical, 2 + tag_length + 8 + 2 + 8 + 4 + text_length)
        put_be(&st.canonical, <uint64_t>tag_length, 2)
        put_bytes(&st.canonical, tag_start, tag_length)
        put_be(&st.canonical, <uint64_t>ts, 8)
        put_u8(&st.canonical, <uint64_t>quality)
        put_u8(&st.canonical, <uint64_t>kind)
        # the COPY row: 5 fields (series, ts, value, text, quality)
        pg_ts = ts - PG_EPOCH_US
        buf_grow(&st.rows, 2 + 4 + 4 + 4 + 8 + 4 + 8 + 4 + 4 + 2 + text_length)
        put_be(&st.rows, 5, 2)
        put_be(&st.rows, 4, 4)
        put_be(&st.rows, <uint64_t><uint32_t><int32_t>sid, 4)
        put_be(&st.rows, 8, 4)
        put_be(&st.rows, <uint64_t>pg_ts, 8)
        minute = pg_ts - pg_ts % MINUTE_US
        b = bucket_of(st, sid, minute, days)
        b.count += 1
        if kind == V_NUMBER or kind == V_BOOL:
            if kind == V_BOOL:
                put_u8(&st.canonical, 1 if value else 0)
            else:
                put_double(&st.canonical, value)
            put_be(&st.rows, 8, 4)
            put_double(&st.rows, value)
            put_be(&st.rows, 0xFFFFFFFF, 4)  # text NULL
            if b.numeric:
                b.total += value
                if value < b.low:
                    b.low = value
                elif value > b.high:
                    b.high = value
            else:
                b.total = b.low = b.high = value
            b.numeric += 1
        elif kind == V_NULL:
            put_be(&st.rows, 0xFFFFFFFF, 4)  # value NULL
            put_be(&st.rows, 0xFFFFFFFF, 4)  # text NULL
        else:
            put_be(&st.canonical, <uint64_t>text_length, 4)
            put_bytes(&st.canonical, text_start, text_length)
            put_be(&st.rows, 0xFFFFFFFF, 4)  # value NULL
            put_be(&st.rows, <uint64_t>text_length, 4)
            put_bytes(&st.rows, text_start, text_length)
        put_be(&st.rows, 2, 4)
        put_be(&st.rows, <uint64_t>quality, 2)
        if ts > newest:
            newest = ts
        count += 1
        skip_ws(s)
        if s.p < s.end and s.p[0] == b',':
            s.p += 1
            continue
        expect(s, b']')
        break
    rollup = {}
    for i in range(st.nbuckets):
        b = &st.buckets[i]
        if b.numeric:
            rollup[b.sid, b.minute] = [b.count, b.numeric, b.total, b.low, b.high]
        else:
            rollup[b.sid, b.minute] = [b.count, 0, None, None, None]
    return (
        first,
        PyBytes_FromStringAndSize(st.canonical.data, st.canonical.size),
        PyBytes_FromStringAndSize(st.rows.data, st.rows.size),
        rollup,
        tuple(days),
        count,
        newest,
    )
