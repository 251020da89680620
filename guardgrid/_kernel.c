/*
 * guardgrid._kernel: the extender's node-cache filter, compiled.
 *
 * Why this exists: the pure-Python/numpy decision (guardgrid/placement.py) runs ~40 numpy calls and ~150
 * distinct lines of Python per filter. Between two requests a gunicorn worker's caches go cold, and every
 * distinct line executed then costs (docs/bench-extender.md, "Third round"), so a filter cost 0.65-0.9 ms
 * in the worker against a budget of ~0.3 ms. Here the whole per-candidate computation is one pass of C.
 *
 * Exactness: this is a second implementation of guardgrid.placement's evaluate, passed_mask,
 * explain_filter and score_array, and must give the same answer bit for bit (tests/test_kernel.py compares
 * both on random clusters). So every float operation is the one numpy performs, in the same order (IEEE
 * add, subtract, multiply, divide and fabs are exactly rounded, whatever the vector width; build with
 * -ffp-contract=off so no fused multiply-add creeps in), and exp is numpy's own ufunc, called on a numpy
 * array: numpy's SIMD exp differs from libm's in the last bit for ~4% of inputs. Text uses "%.Nf", which
 * glibc, like Python's float formatting, rounds exactly from the binary value.
 *
 * It reads the candidates straight from a request body in kube-scheduler's own layout and writes the answer
 * as bytes. Whatever it is not sure to reproduce (a NaN anywhere, a name JSON escapes or sent twice, a name
 * table that needs exact lookups) makes it return None, and the caller decides in Python instead.
 */
#include "_kernel.h"
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Columns of NodeTable.memory and of the aligned snapshot (guardgrid/state.py, guardgrid/placement.py). */
enum { ALLOCATABLE = 0, REQUESTED = 1, STANDBY = 2, MEMORY_COLUMNS = 3 };
enum { COVERED = 0, MEAN = 1, SPREAD = 2, FAULT_RATE = 3, FORECAST_COLUMNS = 4 };
enum { BUCKET_WIDTH = 8 }; /* guardgrid/nameindex.py: slots per bucket */
enum { MAX_SCORE = 10 };

static const double MIN_SPREAD_BYTES = 1048576.0; /* guardgrid/risk.py */
static const double ERFC_INNERMOST = 0.17087277;
static const double ERFC_COEFFICIENTS[] = {-0.82215223, 1.48851587, -1.13520398, 0.27886807,
                                           -0.18628806, 0.09678418, 0.37409196,  1.00002368};
static const double ERFC_CONSTANT = 1.26551223;

static PyObject *numpy_exp; /* numpy.exp, looked up once */

/* numpy.maximum / numpy.minimum on two doubles: the first argument when it is NaN or wins a tie. */
static inline double np_maximum(double a, double b) { return (a >= b || isnan(a)) ? a : b; }
static inline double np_minimum(double a, double b) { return (a <= b || isnan(a)) ? a : b; }

/* What one candidate's evaluation needs after exp: the figures the messages and scores read. */
typedef struct {
    double allocatable, base, inflight, own_slot, fault_rate, risk;
    Py_hash_t hash;
    Py_ssize_t row;
    char known, covered;
} Candidate;

/* ---- lookups ------------------------------------------------------------------------------------- */

typedef struct {
    const int64_t *hashes; /* (buckets, 8) */
    const int64_t *rows;   /* (buckets * 8) */
    uint64_t mask;
} NameTable;

/* Row of a name hash: the slot of its bucket holding the same hash, as NameIndex.rows finds it. */
static inline Py_ssize_t row_of(const NameTable *table, Py_hash_t hash) {
    uint64_t bucket = (uint64_t)hash & table->mask;
    const int64_t *slots = table->hashes + bucket * BUCKET_WIDTH;
    for (int slot = 0; slot < BUCKET_WIDTH; slot++) {
        if (slots[slot] == (int64_t)hash) {
            return (Py_ssize_t)table->rows[bucket * BUCKET_WIDTH + slot];
        }
    }
    return -1;
}

/* ---- text ---------------------------------------------------------------------------------------- */

/* A finite, non-negative number with `decimals` (0-2) digits after the point, exactly as "%.*f" writes
 * it (rounded from the exact binary value, ties to even); returns the length written (at most 40).
 *
 * Why not snprintf alone: a filter rejecting 200 nodes writes 600 numbers, and glibc's exact conversion
 * costs ~0.3 us each. Scaling by 10^decimals and rounding to an integer gives the same digits unless the
 * scaled value lies within its own rounding error of a half (then snprintf decides) or is too large. */
static int write_fixed(char *out, double value, int decimals) {
    static const double scale[] = {1.0, 10.0, 100.0};
    static const uint64_t divisor[] = {1, 10, 100};
    double scaled = value * scale[decimals];
    if (!(scaled >= 0.0 && scaled < 1e15)) return snprintf(out, 41, "%.*f", decimals, value);
    double rounded = nearbyint(scaled);
    double distance_to_half = fabs(fabs(scaled - rounded) - 0.5);
    if (distance_to_half <= 1e-12 * (scaled > 1.0 ? scaled : 1.0)) {
        return snprintf(out, 41, "%.*f", decimals, value);
    }
    uint64_t units = (uint64_t)rounded;
    uint64_t whole = units / divisor[decimals], part = units % divisor[decimals];
    char reversed[24];
    int length = 0;
    do {
        reversed[length++] = (char)('0' + whole % 10);
        whole /= 10;
    } while (whole);
    int written = 0;
    while (length) out[written++] = reversed[--length];
    if (decimals) {
        out[written++] = '.';
        for (uint64_t digit = divisor[decimals] / 10; digit; digit /= 10) {
            out[written++] = (char)('0' + (part / digit) % 10);
        }
    }
    out[written] = '\0';
    return written;
}

/* guardgrid.quantity.format_bytes for a finite amount: "58.2Gi", "512Mi", "3"; returns its length
 * (at most 44: a sign, 40 digits, a unit). */
static int format_bytes(char *out, double amount) {
    static const char *const suffixes[] = {"", "Ki", "Mi", "Gi", "Ti"};
    static const double steps[] = {1024.0, 1048576.0, 1073741824.0, 1099511627776.0};
    static const double scales[] = {1.0, 1024.0, 1048576.0, 1073741824.0, 1099511627776.0};
    double magnitude = fabs(amount);
    int unit = 0;
    while (unit < 4 && steps[unit] <= magnitude) unit++; /* bisect_right */
    int length = 0;
    if (amount < 0) out[length++] = '-';
    int digits = write_fixed(out + length, magnitude / scales[unit], unit ? 1 : 0);
    if (digits < 0 || digits > 40) return -1;
    length += digits;
    if (unit && digits >= 2 && out[length - 2] == '.' && out[length - 1] == '0') length -= 2; /* ".0" */
    size_t suffix = strlen(suffixes[unit]);
    memcpy(out + length, suffixes[unit], suffix);
    length += (int)suffix;
    out[length] = '\0';
    return length;
}

/* Appends `length` bytes to a message being built; the caller sized the buffer for the longest parts. */
static inline char *append(char *at, const char *text, size_t length) {
    memcpy(at, text, length);
    return at + length;
}

/* ---- the decision -------------------------------------------------------------------------------- */

static int check_table(PyObject *array, int columns, const char *what) {
    if (!PyArray_Check(array) || PyArray_TYPE((PyArrayObject *)array) != NPY_FLOAT64 ||
        PyArray_NDIM((PyArrayObject *)array) != 2 || PyArray_DIM((PyArrayObject *)array, 1) != columns ||
        !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)array)) {
        PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous float64 array of shape (n, %d)", what, columns);
        return -1;
    }
    return 0;
}

static int check_int64(PyObject *array, const char *what) {
    if (!PyArray_Check(array) || PyArray_TYPE((PyArrayObject *)array) != NPY_INT64 ||
        !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)array)) {
        PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous int64 array", what);
        return -1;
    }
    return 0;
}

/* Everything a decision reads besides the candidates: the arguments both entry points share. */
typedef struct {
    NameTable table;
    const double *memory, *forecast; /* forecast NULL: no fresh snapshot, every node on requests */
    Py_ssize_t nodes;
    double *own_slot, *inflight;     /* per row, or NULL when the pod has none / nothing is in flight */
    Py_ssize_t existing_row;
    double existing_request, peak, threshold, fallback_spread, fault_prior, fault_reference;
    double weight_risk, weight_balance, weight_fault;
    int keep_least_risky;
    PyObject *unknown_message;
} Inputs;

/* A node-name -> bytes dict spread over rows (placement._per_candidate by row): NULL for an empty dict. */
static int per_row(PyObject *amounts, const Inputs *in, double **out) {
    *out = NULL;
    if (PyDict_GET_SIZE(amounts) == 0) return PARSED;
    *out = PyMem_Calloc((size_t)in->nodes, sizeof(double));
    if (*out == NULL) {
        PyErr_NoMemory();
        return FAILED;
    }
    Py_ssize_t position = 0;
    PyObject *name, *value;
    while (PyDict_Next(amounts, &position, &name, &value)) {
        if (!PyUnicode_CheckExact(name)) return DECLINED;
        Py_hash_t hash = PyObject_Hash(name);
        if (hash == -1) return FAILED;
        Py_ssize_t row = row_of(&in->table, hash);
        if (row < 0) continue; /* a node not in the table: no candidate of ours */
        if (row >= in->nodes) return DECLINED;
        double amount = PyFloat_AsDouble(value);
        if (amount == -1.0 && PyErr_Occurred()) return FAILED;
        (*out)[row] = amount;
    }
    return PARSED;
}

/* The shared arguments, after the entry point's own first ones: see guardgrid/kernel.py. */
static int read_inputs(PyObject *args, Py_ssize_t skip, Inputs *in) {
    PyObject *bucket_hashes, *slot_rows, *memory_obj, *forecast_obj, *own_slots, *recent;
    Py_ssize_t mask;
    PyObject *rest = PyTuple_GetSlice(args, skip, PyTuple_GET_SIZE(args));
    if (rest == NULL) return FAILED;
    int parsed = PyArg_ParseTuple(rest, "OOnOOO!O!ndddpddddddU:filter", &bucket_hashes, &slot_rows, &mask,
                                  &memory_obj, &forecast_obj, &PyDict_Type, &own_slots, &PyDict_Type, &recent,
                                  &in->existing_row, &in->existing_request, &in->peak, &in->threshold,
                                  &in->keep_least_risky, &in->fallback_spread, &in->fault_prior,
                                  &in->fault_reference, &in->weight_risk, &in->weight_balance, &in->weight_fault,
                                  &in->unknown_message);
    Py_DECREF(rest);
    if (!parsed || check_int64(bucket_hashes, "bucket_hashes") < 0 || check_int64(slot_rows, "slot_rows") < 0 ||
        check_table(memory_obj, MEMORY_COLUMNS, "memory") < 0) {
        return FAILED;
    }
    int on_forecast = forecast_obj != Py_None;
    if (on_forecast && check_table(forecast_obj, FORECAST_COLUMNS, "forecast") < 0) return FAILED;
    in->nodes = PyArray_DIM((PyArrayObject *)memory_obj, 0);
    if (in->nodes == 0 || (on_forecast && PyArray_DIM((PyArrayObject *)forecast_obj, 0) != in->nodes) ||
        PyArray_SIZE((PyArrayObject *)bucket_hashes) != PyArray_SIZE((PyArrayObject *)slot_rows) ||
        (uint64_t)PyArray_SIZE((PyArrayObject *)slot_rows) != ((uint64_t)mask + 1) * BUCKET_WIDTH) {
        return DECLINED; /* an empty or inconsistent table: Python handles it */
    }
    in->table = (NameTable){(const int64_t *)PyArray_DATA((PyArrayObject *)bucket_hashes),
                            (const int64_t *)PyArray_DATA((PyArrayObject *)slot_rows), (uint64_t)mask};
    in->memory = (const double *)PyArray_DATA((PyArrayObject *)memory_obj);
    in->forecast = on_forecast ? (const double *)PyArray_DATA((PyArrayObject *)forecast_obj) : NULL;
    int status = per_row(own_slots, in, &in->own_slot);
    if (status != PARSED) return status;
    return per_row(recent, in, &in->inflight);
}

static void free_inputs(Inputs *in) {
    PyMem_Free(in->own_slot);
    PyMem_Free(in->inflight);
    in->own_slot = in->inflight = NULL;
}

/* evaluate() and passed_mask() for candidates whose `hash` is set: fills every other field and `rejected`.
 * Returns PARSED, DECLINED (a NaN: Python decides) or FAILED (an exception is set). */
static int decide(const Inputs *in, Candidate *candidates, Py_ssize_t count, char *rejected) {
    const double *memory = in->memory, *forecast = in->forecast;
    /* Lookups in two sweeps that only start loads, so that the memory reads of all candidates overlap.
     * Why: between two requests the node tables drop out of the worker's caches, and a lookup is a chain of
     * dependent reads (bucket, row, the row's figures). One candidate after another, those misses came one
     * after another too: 211 us for 500 candidates cold against 62 us warm (in process, caches evicted). */
    for (Py_ssize_t i = 0; i < count; i++) {
        uint64_t bucket = ((uint64_t)candidates[i].hash & in->table.mask) * BUCKET_WIDTH;
        __builtin_prefetch(in->table.hashes + bucket);
        __builtin_prefetch(in->table.rows + bucket);
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t row = row_of(&in->table, candidates[i].hash);
        if (row >= in->nodes) return DECLINED;
        candidates[i].row = row;
        if (row >= 0) {
            __builtin_prefetch(memory + row * MEMORY_COLUMNS);
            __builtin_prefetch(memory + row * MEMORY_COLUMNS + MEMORY_COLUMNS - 1);
            if (forecast != NULL) {
                __builtin_prefetch(forecast + row * FORECAST_COLUMNS);
                __builtin_prefetch(forecast + row * FORECAST_COLUMNS + FORECAST_COLUMNS - 1);
            }
        }
    }
    npy_intp length = count;
    PyArrayObject *poly_array = (PyArrayObject *)PyArray_SimpleNew(1, &length, NPY_FLOAT64);
    double *t_values = PyMem_Malloc(sizeof(double) * (size_t)(count ? count : 1));
    int status = FAILED;
    if (poly_array == NULL || t_values == NULL) {
        if (poly_array != NULL) PyErr_NoMemory();
        goto done;
    }
    double *poly = (double *)PyArray_DATA(poly_array);

    /* Pass 1: evaluate() up to erfc's exp. */
    for (Py_ssize_t i = 0; i < count; i++) {
        Candidate *c = &candidates[i];
        Py_ssize_t row = c->row;
        c->known = row >= 0;
        const double *figures = memory + (c->known ? row : 0) * MEMORY_COLUMNS;
        c->allocatable = c->known ? figures[ALLOCATABLE] : 0.0;
        c->own_slot = c->known && in->own_slot != NULL ? in->own_slot[row] : 0.0;
        /* The requests-based figures (placement._requests_based), used where no forecast covers the node. */
        double requests_base = figures[REQUESTED] - c->own_slot;
        requests_base -= (in->existing_row >= 0 && row == in->existing_row) ? in->existing_request : 0.0;
        requests_base = np_maximum(requests_base, 0.0);
        double requests_spread = in->fallback_spread * c->allocatable;
        double spread;
        c->inflight = 0.0;
        if (forecast != NULL) {
            const double *predicted = forecast + (c->known ? row : 0) * FORECAST_COLUMNS;
            c->covered = predicted[COVERED] > 0.0 && c->known;
            c->fault_rate = predicted[FAULT_RATE];
            if (c->covered) {
                c->base = predicted[MEAN] + np_maximum(figures[STANDBY] - c->own_slot, 0.0);
                spread = predicted[SPREAD];
                if (in->inflight != NULL) c->inflight = in->inflight[row];
            } else {
                c->base = requests_base;
                spread = requests_spread;
            }
        } else {
            c->covered = 0;
            c->fault_rate = in->fault_prior;
            c->base = requests_base;
            spread = requests_spread;
        }
        /* risk.oom_risk: headroom in spreads, then normal_sf = erfc(z / sqrt 2) / 2 (Numerical Recipes). */
        double demand = c->base + c->inflight;
        demand += in->peak;
        double headroom = c->allocatable - demand;
        headroom /= np_maximum(spread, MIN_SPREAD_BYTES);
        double x = headroom / M_SQRT2;
        if (isnan(x)) {
            status = DECLINED;
            goto done;
        }
        double z = fabs(x);
        double t = z * 0.5;
        t += 1.0;
        t = 1.0 / t;
        double p = t * ERFC_INNERMOST;
        for (size_t k = 0; k < sizeof ERFC_COEFFICIENTS / sizeof ERFC_COEFFICIENTS[0]; k++) {
            p += ERFC_COEFFICIENTS[k];
            p *= t;
        }
        z *= z;
        z += ERFC_CONSTANT;
        p -= z;
        poly[i] = p;
        t_values[i] = t;
        c->risk = x; /* the sign is needed after exp */
    }
    if (count) {
        PyObject *same = PyObject_CallFunctionObjArgs(numpy_exp, (PyObject *)poly_array, (PyObject *)poly_array,
                                                      NULL);
        if (same == NULL) goto done;
        Py_DECREF(same);
    }

    /* Pass 2: risk, then the filter's verdict (passed_mask). */
    int any_known = 0, all_known_rejected = 1;
    double least_risk = INFINITY;
    for (Py_ssize_t i = 0; i < count; i++) {
        Candidate *c = &candidates[i];
        double erfc = poly[i] * t_values[i];
        if (c->risk < 0) erfc = 2.0 - erfc;
        double risk = erfc * 0.5;
        if (c->allocatable <= 0 || !c->known) risk = 1.0;
        if (isnan(risk)) {
            status = DECLINED;
            goto done;
        }
        c->risk = risk;
        if (c->known) {
            any_known = 1;
            if (!(risk > in->threshold)) all_known_rejected = 0;
            if (risk < least_risk) least_risk = risk;
        }
    }
    int keep_least = in->keep_least_risky && any_known && all_known_rejected;
    for (Py_ssize_t i = 0; i < count; i++) {
        Candidate *c = &candidates[i];
        rejected[i] = (c->risk > in->threshold || !c->known) && !(keep_least && c->known && c->risk <= least_risk);
    }
    status = PARSED;
done:
    Py_XDECREF(poly_array);
    PyMem_Free(t_values);
    return status;
}

/* score_array for one passed candidate; -1 for a NaN (then Python decides). */
static long score_of(const Inputs *in, const Candidate *c) {
    double score_threshold = in->threshold >= 1e-9 ? in->threshold : 1e-9; /* max(threshold, 1e-9) */
    double weights = in->weight_risk + in->weight_balance;
    weights += in->weight_fault;
    double risk_term = 1.0 - np_minimum(c->risk / score_threshold, 1.0);
    double used = c->base + c->inflight;
    used += in->peak;
    double utilisation = c->allocatable > 0 ? used / c->allocatable : INFINITY;
    double balance_term = 1.0 - np_minimum(np_maximum(utilisation, 0.0), 1.0);
    double fault_term = 1.0 - np_minimum(c->fault_rate / in->fault_reference, 1.0);
    double combined = 0.0;
    if (weights > 0) {
        combined = risk_term * in->weight_risk;
        combined += balance_term * in->weight_balance;
        combined += fault_term * in->weight_fault;
        combined /= weights;
    }
    combined = np_minimum(np_maximum(combined, 0.0), 1.0);
    combined *= (double)(MAX_SCORE - 1);
    if (isnan(combined)) return -1;
    long graded = (long)nearbyint(combined);
    if (c->own_slot > 0) graded = MAX_SCORE;
    if (graded < 0) graded = 0;
    if (graded > MAX_SCORE) graded = MAX_SCORE;
    return graded;
}

/* explain_filter's message for a rejected candidate, as Python words it; its length, or -1 (decline). */
typedef struct {
    char over[64], pod_part[96];
    int over_length, pod_length;
} MessageParts;

static int message_parts(const Inputs *in, MessageParts *parts) {
    if (!isfinite(in->threshold) || in->threshold < 0 || !isfinite(in->peak)) return -1;
    parts->over_length = snprintf(parts->over, sizeof parts->over, " > %.2f (", in->threshold);
    char pod_size[48];
    if (format_bytes(pod_size, in->peak) < 0) return -1;
    parts->pod_length = snprintf(parts->pod_part, sizeof parts->pod_part, " + pod %s of ", pod_size);
    if (parts->over_length < 0 || parts->over_length >= (int)sizeof parts->over || parts->pod_length < 0 ||
        parts->pod_length >= (int)sizeof parts->pod_part) {
        return -1;
    }
    return 0;
}

enum { MESSAGE_SIZE = 512 }; /* parts at most 30+40+64+10+44+96+44+1 */

static int risk_message(char *message, const MessageParts *parts, const Candidate *c) {
    static const char head[] = "GuardGrid: predicted OOM risk ";
    char number[48];
    double used = c->base + c->inflight;
    if (!isfinite(used) || !isfinite(c->allocatable)) return -1;
    char *at = append(message, head, sizeof head - 1);
    int length = write_fixed(number, c->risk, 2);
    if (length < 0 || length > 40) return -1;
    at = append(at, number, (size_t)length);
    at = append(at, parts->over, (size_t)parts->over_length);
    at = c->covered ? append(at, "forecast ", 9) : append(at, "requested ", 10);
    if ((length = format_bytes(number, used)) < 0) return -1;
    at = append(at, number, (size_t)length);
    at = append(at, parts->pod_part, (size_t)parts->pod_length);
    if ((length = format_bytes(number, c->allocatable)) < 0) return -1;
    at = append(at, number, (size_t)length);
    at = append(at, ")", 1);
    return (int)(at - message);
}

/* ---- the raw request body ------------------------------------------------------------------------ */

/* Whether _Py_HashBytes gives str's hash for ASCII text (CPython hashes a 1-byte-kind str as its bytes):
 * checked at import, so the body path can look names up in the same NameIndex without making str objects. */
static int bytes_hash_is_str_hash;

typedef struct {
    char *data;
    size_t size, capacity;
} Buffer;

static int reserve(Buffer *buffer, size_t more) {
    if (buffer->data != NULL && buffer->size + more <= buffer->capacity) return 0;
    size_t capacity = buffer->capacity ? buffer->capacity : 4096;
    while (capacity < buffer->size + more) capacity *= 2;
    char *data = PyMem_Realloc(buffer->data, capacity);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    buffer->data = data;
    buffer->capacity = capacity;
    return 0;
}

static int put(Buffer *buffer, const char *text, size_t length) {
    if (reserve(buffer, length) < 0) return -1;
    memcpy(buffer->data + buffer->size, text, length);
    buffer->size += length;
    return 0;
}

#define PUT_LITERAL(buffer, literal) put((buffer), (literal), sizeof(literal) - 1)

/* The names of a `"NodeNames"` array exactly as kube-scheduler (Go's encoding/json, as orjson) writes plain
 * DNS names: `["a","b"]`, no spaces, each name printable ASCII without quote or backslash. Anything else
 * (an escape, UTF-8, whitespace) returns DECLINED: Python reads such a body whole. Fills starts/lengths. */
static int scan_names(const char *text, Py_ssize_t size, Py_ssize_t *starts, Py_ssize_t *lengths,
                      Py_ssize_t *count) {
    Py_ssize_t at = 0, found = 0;
    if (size < 2 || text[0] != '[' || text[size - 1] != ']') return DECLINED;
    at = 1;
    if (size == 2) {
        *count = 0;
        return PARSED;
    }
    for (;;) {
        if (at >= size || text[at] != '"') return DECLINED;
        Py_ssize_t start = ++at;
        while (at < size && text[at] != '"') {
            unsigned char ch = (unsigned char)text[at];
            if (ch < 0x20 || ch > 0x7e || ch == '\\') return DECLINED;
            at++;
        }
        if (at >= size) return DECLINED;
        starts[found] = start;
        lengths[found] = at - start;
        found++;
        at++; /* the closing quote */
        if (at == size - 1) break; /* the closing bracket */
        if (text[at] != ',') return DECLINED;
        at++;
    }
    *count = found;
    return PARSED;
}

PyDoc_STRVAR(filter_body_doc,
"filter_body(body, start, end, bucket_hashes, slot_rows, mask, memory, forecast, own_slot, inflight,\n"
"            existing_row, existing_request, peak, threshold, keep_least_risky, fallback_spread,\n"
"            fault_prior, fault_reference, weight_risk, weight_balance, weight_fault, unknown_message)\n"
"--\n\n"
"The filter for the names array body[start:end], answered as bytes: (ExtenderFilterResult JSON, the\n"
"passed names as a JSON array, their HostPriorityList JSON, passed count, OOM-risk rejections, unknown\n"
"rejections), each text byte for byte what the Python path writes; or None (Python decides).");

static PyObject *kernel_filter_body(PyObject *self, PyObject *args) {
    Inputs in = {0};
    const char *body;
    Py_ssize_t body_size, start, end;
    PyObject *head = PyTuple_GetSlice(args, 0, 3);
    if (head == NULL) return NULL;
    int parsed = PyArg_ParseTuple(head, "y#nn:filter_body", &body, &body_size, &start, &end);
    Py_DECREF(head);
    if (!parsed) return NULL;
    if (!bytes_hash_is_str_hash || start < 0 || end > body_size || end < start) Py_RETURN_NONE;
    const char *text = body + start;
    Py_ssize_t size = end - start, bound = size / 3 + 1; /* each name takes at least `"",` */
    PyObject *result = NULL;
    Buffer names = {0}, answer = {0}, priorities = {0}, failures = {0}; /* failures: FailedNodes' entries */
    Candidate *candidates = PyMem_Malloc(sizeof(Candidate) * (size_t)bound);
    Py_ssize_t *starts = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)bound);
    Py_ssize_t *lengths = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)bound);
    char *rejected = PyMem_Malloc((size_t)bound);
    unsigned char *seen = NULL;
    Py_ssize_t count = 0, unknown = 0, failed = 0, passed = 0;
    if (candidates == NULL || starts == NULL || lengths == NULL || rejected == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    int status = read_inputs(args, 3, &in);
    if (status == DECLINED) goto decline;
    if (status == FAILED) goto done;
    Py_ssize_t unknown_size;
    const char *unknown_text = PyUnicode_AsUTF8AndSize(in.unknown_message, &unknown_size);
    if (unknown_text == NULL) goto done;
    if (scan_names(text, size, starts, lengths, &count) != PARSED) goto decline;
    for (Py_ssize_t i = 0; i < count; i++) candidates[i].hash = _Py_HashBytes(text + starts[i], lengths[i]);
    status = decide(&in, candidates, count, rejected);
    if (status == DECLINED) goto decline;
    if (status == FAILED) goto done;

    /* A name sent twice: Python's dict of rejections keeps one entry for both; rare, so Python answers it. */
    seen = PyMem_Calloc((size_t)(in.nodes / 8 + 1), 1);
    if (seen == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t row = candidates[i].row;
        if (row >= 0) {
            if (seen[row / 8] & (1u << (row % 8))) goto decline;
            seen[row / 8] |= (unsigned char)(1u << (row % 8));
            continue;
        }
        if (++unknown > 64) goto decline;
        for (Py_ssize_t j = 0; j < i; j++) {
            if (candidates[j].row < 0 && lengths[j] == lengths[i] &&
                memcmp(text + starts[j], text + starts[i], (size_t)lengths[i]) == 0) {
                goto decline;
            }
        }
    }

    /* The answer: {"Nodes":null,"NodeNames":[...],"FailedNodes":{...},"FailedAndUnresolvableNodes":{},
     * "Error":""}, as orjson writes filter_result's dict. */
    MessageParts parts;
    char message[MESSAGE_SIZE];
    if (message_parts(&in, &parts) < 0) goto decline;
    /* Every buffer sized once for the most it can take, then written without checks: ~3,000 small appends
     * per request, each re-checking its room, were most of the writing's cost. */
    size_t all_names = 0, rejected_count = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        all_names += (size_t)lengths[i];
        rejected_count += (size_t)rejected[i];
    }
    /* The longest message risk_message can write with these parts (numbers at most 40 characters, sizes 44),
     * not MESSAGE_SIZE: at 512 bytes each, 200 rejections rounded the buffer up to 128 KiB, glibc's mmap
     * threshold, and a fresh mapping per request is a page fault per 4 KiB written. */
    size_t risk_room = 30 + 40 + (size_t)parts.over_length + 10 + 44 + (size_t)parts.pod_length + 44 + 1;
    size_t reason_room = (size_t)unknown_size > risk_room ? (size_t)unknown_size : risk_room;
    if (reserve(&names, all_names + 3 * (size_t)count + 2) < 0 ||
        reserve(&priorities, all_names + 23 * (size_t)count + 2) < 0 ||
        reserve(&failures, all_names + 6 * (size_t)count + rejected_count * reason_room + 1) < 0) {
        goto done;
    }
    char *n = names.data, *l = priorities.data, *f = failures.data;
    *n++ = '[';
    *l++ = '[';
    for (Py_ssize_t i = 0; i < count; i++) {
        const Candidate *c = &candidates[i];
        const char *name = text + starts[i];
        size_t length = (size_t)lengths[i];
        if (rejected[i]) {
            const char *reason = unknown_text;
            int reason_size = (int)unknown_size;
            if (c->known) {
                reason_size = risk_message(message, &parts, c);
                if (reason_size < 0) goto decline;
                reason = message;
            }
            if (failed++) *f++ = ',';
            *f++ = '"';
            f = append(f, name, length);
            f = append(f, "\":\"", 3);
            f = append(f, reason, (size_t)reason_size);
            *f++ = '"';
            continue;
        }
        long graded = score_of(&in, c);
        if (graded < 0) goto decline;
        if (passed++) {
            *n++ = ',';
            *l++ = ',';
        }
        *n++ = '"';
        n = append(n, name, length);
        *n++ = '"';
        l = append(l, "{\"Host\":\"", 9);
        l = append(l, name, length);
        l = append(l, "\",\"Score\":", 10);
        /* 0..10 written by hand: snprintf per passed node was ~0.2 us each, a third of the writing. */
        if (graded == MAX_SCORE) {
            l = append(l, "10", 2);
        } else {
            *l++ = (char)('0' + graded);
        }
        *l++ = '}';
    }
    *n++ = ']';
    *l++ = ']';
    names.size = (size_t)(n - names.data);
    priorities.size = (size_t)(l - priorities.data);
    failures.size = (size_t)(f - failures.data);
    if (PUT_LITERAL(&answer, "{\"Nodes\":null,\"NodeNames\":") < 0 || put(&answer, names.data, names.size) < 0 ||
        PUT_LITERAL(&answer, ",\"FailedNodes\":{") < 0 || put(&answer, failures.data, failures.size) < 0 ||
        PUT_LITERAL(&answer, "},\"FailedAndUnresolvableNodes\":{},\"Error\":\"\"}") < 0) {
        goto done;
    }
    result = Py_BuildValue("(y#y#y#nnn)", answer.data, (Py_ssize_t)answer.size, names.data,
                           (Py_ssize_t)names.size, priorities.data, (Py_ssize_t)priorities.size, passed,
                           failed - unknown, unknown);
    goto done;

decline:
    result = Py_NewRef(Py_None);
done:
    free_inputs(&in);
    PyMem_Free(names.data);
    PyMem_Free(answer.data);
    PyMem_Free(priorities.data);
    PyMem_Free(failures.data);
    PyMem_Free(candidates);
    PyMem_Free(starts);
    PyMem_Free(lengths);
    PyMem_Free(rejected);
    PyMem_Free(seen);
    return result;
}

static PyMethodDef kernel_methods[] = {
    {"filter_body", kernel_filter_body, METH_VARARGS, filter_body_doc},
    {"read_pod", kernel_read_pod, METH_VARARGS, read_pod_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef kernel_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "guardgrid._kernel",
    .m_doc = "The extender's node-cache filter in C; see guardgrid/kernel.py.",
    .m_size = -1,
    .m_methods = kernel_methods,
};

PyMODINIT_FUNC PyInit__kernel(void) {
    import_array();
    PyObject *numpy = PyImport_ImportModule("numpy");
    if (numpy == NULL) return NULL;
    numpy_exp = PyObject_GetAttrString(numpy, "exp");
    Py_DECREF(numpy);
    if (numpy_exp == NULL) return NULL;
    static const char probe[] = "guardgrid-node-7";
    PyObject *probe_text = PyUnicode_FromStringAndSize(probe, sizeof probe - 1);
    if (probe_text == NULL) return NULL;
    bytes_hash_is_str_hash = PyObject_Hash(probe_text) == _Py_HashBytes(probe, sizeof probe - 1);
    Py_DECREF(probe_text);
    return PyModule_Create(&kernel_module);
}
