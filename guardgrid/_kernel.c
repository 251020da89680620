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
 * Whatever this code is not sure to reproduce (a NaN anywhere, a non-str name, a name table that needs
 * exact lookups) makes it return None, and the caller decides in Python instead.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
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

/* amounts[name] as a double, 0.0 when absent; -1 on an error (set). Only for a non-empty dict. */
static int amount_of(PyObject *amounts, PyObject *name, double *out) {
    PyObject *value = PyDict_GetItemWithError(amounts, name);
    if (value == NULL) {
        if (PyErr_Occurred()) return -1;
        *out = 0.0;
        return 0;
    }
    double amount = PyFloat_AsDouble(value);
    if (amount == -1.0 && PyErr_Occurred()) return -1;
    *out = amount;
    return 0;
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

PyDoc_STRVAR(filter_doc,
"filter(names, bucket_hashes, slot_rows, mask, memory, forecast, own_slot, inflight, existing_row,\n"
"       existing_request, peak, threshold, keep_least_risky, fallback_spread, fault_prior,\n"
"       fault_reference, weight_risk, weight_balance, weight_fault, unknown_message)\n"
"--\n\n"
"(passed names, failed name -> message, unknown rejections, passed nodes' scores), or None when the\n"
"Python decision must answer instead. See guardgrid/kernel.py for the arguments.");

static PyObject *kernel_filter(PyObject *self, PyObject *args) {
    PyObject *names, *bucket_hashes, *slot_rows, *memory_obj, *forecast_obj, *own_slots, *recent;
    PyObject *unknown_message;
    Py_ssize_t mask, existing_row;
    double existing_request, peak, threshold, fallback_spread, fault_prior, fault_reference;
    double weight_risk, weight_balance, weight_fault;
    int keep_least_risky;
    if (!PyArg_ParseTuple(args, "O!OOnOOO!O!ndddpddddddU:filter", &PyList_Type, &names, &bucket_hashes,
                          &slot_rows, &mask, &memory_obj, &forecast_obj, &PyDict_Type, &own_slots,
                          &PyDict_Type, &recent, &existing_row, &existing_request, &peak, &threshold,
                          &keep_least_risky, &fallback_spread, &fault_prior, &fault_reference, &weight_risk,
                          &weight_balance, &weight_fault, &unknown_message)) {
        return NULL;
    }
    if (check_int64(bucket_hashes, "bucket_hashes") < 0 || check_int64(slot_rows, "slot_rows") < 0 ||
        check_table(memory_obj, MEMORY_COLUMNS, "memory") < 0) {
        return NULL;
    }
    int on_forecast = forecast_obj != Py_None;
    if (on_forecast && check_table(forecast_obj, FORECAST_COLUMNS, "forecast") < 0) return NULL;
    Py_ssize_t nodes = PyArray_DIM((PyArrayObject *)memory_obj, 0);
    if (nodes == 0 || (on_forecast && PyArray_DIM((PyArrayObject *)forecast_obj, 0) != nodes) ||
        PyArray_SIZE((PyArrayObject *)bucket_hashes) != PyArray_SIZE((PyArrayObject *)slot_rows) ||
        (uint64_t)PyArray_SIZE((PyArrayObject *)slot_rows) != ((uint64_t)mask + 1) * BUCKET_WIDTH) {
        Py_RETURN_NONE; /* an empty or inconsistent table: Python handles it */
    }
    NameTable table = {(const int64_t *)PyArray_DATA((PyArrayObject *)bucket_hashes),
                       (const int64_t *)PyArray_DATA((PyArrayObject *)slot_rows), (uint64_t)mask};
    const double *memory = (const double *)PyArray_DATA((PyArrayObject *)memory_obj);
    const double *forecast = on_forecast ? (const double *)PyArray_DATA((PyArrayObject *)forecast_obj) : NULL;
    int any_own = PyDict_GET_SIZE(own_slots) > 0, any_recent = PyDict_GET_SIZE(recent) > 0;

    Py_ssize_t count = PyList_GET_SIZE(names);
    npy_intp length = count;
    PyObject *result = NULL, *passed = NULL, *failed = NULL, *scores = NULL;
    Candidate *candidates = NULL;
    PyArrayObject *poly_array = (PyArrayObject *)PyArray_SimpleNew(1, &length, NPY_FLOAT64);
    double *t_values = PyMem_Malloc(sizeof(double) * (size_t)(count ? count : 1));
    candidates = PyMem_Malloc(sizeof(Candidate) * (size_t)(count ? count : 1));
    if (poly_array == NULL || t_values == NULL || candidates == NULL) {
        if (poly_array != NULL) PyErr_NoMemory();
        goto done;
    }
    double *poly = (double *)PyArray_DATA(poly_array);

    /* Lookups in two sweeps that only start loads, so that the memory reads of all candidates overlap.
     * Why: between two requests the node tables drop out of the worker's caches, and a lookup is a chain of
     * dependent reads (bucket, row, the row's figures). One candidate after another, those misses came one
     * after another too: 211 us for 500 candidates cold against 62 us warm (in process, caches evicted). */
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *name = PyList_GET_ITEM(names, i);
        if (!PyUnicode_CheckExact(name)) goto decline;
        Py_hash_t hash = PyObject_Hash(name);
        if (hash == -1) goto done;
        candidates[i].hash = hash;
        uint64_t bucket = ((uint64_t)hash & table.mask) * BUCKET_WIDTH;
        __builtin_prefetch(table.hashes + bucket);
        __builtin_prefetch(table.rows + bucket);
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t row = row_of(&table, candidates[i].hash);
        if (row >= nodes) goto decline;
        candidates[i].row = row;
        if (row >= 0) {
            __builtin_prefetch(memory + row * MEMORY_COLUMNS);
            __builtin_prefetch(memory + row * MEMORY_COLUMNS + MEMORY_COLUMNS - 1);
            if (on_forecast) {
                __builtin_prefetch(forecast + row * FORECAST_COLUMNS);
                __builtin_prefetch(forecast + row * FORECAST_COLUMNS + FORECAST_COLUMNS - 1);
            }
        }
    }

    /* Pass 1: evaluate() up to erfc's exp. */
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *name = PyList_GET_ITEM(names, i);
        Candidate *c = &candidates[i];
        Py_ssize_t row = c->row;
        c->known = row >= 0;
        const double *figures = memory + (c->known ? row : 0) * MEMORY_COLUMNS;
        c->allocatable = c->known ? figures[ALLOCATABLE] : 0.0;
        c->own_slot = 0.0;
        if (c->known && any_own && amount_of(own_slots, name, &c->own_slot) < 0) goto done;
        /* The requests-based figures (placement._requests_based), used where no forecast covers the node. */
        double requests_base = figures[REQUESTED] - c->own_slot;
        requests_base -= (existing_row >= 0 && row == existing_row) ? existing_request : 0.0;
        requests_base = np_maximum(requests_base, 0.0);
        double requests_spread = fallback_spread * c->allocatable;
        double spread;
        c->inflight = 0.0;
        if (on_forecast) {
            const double *predicted = forecast + (c->known ? row : 0) * FORECAST_COLUMNS;
            c->covered = predicted[COVERED] > 0.0 && c->known;
            c->fault_rate = predicted[FAULT_RATE];
            if (c->covered) {
                c->base = predicted[MEAN] + np_maximum(figures[STANDBY] - c->own_slot, 0.0);
                spread = predicted[SPREAD];
                if (any_recent && amount_of(recent, name, &c->inflight) < 0) goto done;
            } else {
                c->base = requests_base;
                spread = requests_spread;
            }
        } else {
            c->covered = 0;
            c->fault_rate = fault_prior;
            c->base = requests_base;
            spread = requests_spread;
        }
        /* risk.oom_risk: headroom in spreads, then normal_sf = erfc(z / sqrt 2) / 2 (Numerical Recipes). */
        double demand = c->base + c->inflight;
        demand += peak;
        double headroom = c->allocatable - demand;
        headroom /= np_maximum(spread, MIN_SPREAD_BYTES);
        double x = headroom / M_SQRT2;
        if (isnan(x)) goto decline;
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

    /* Pass 2: risk, the filter's verdict (passed_mask). */
    int any_known = 0, all_known_rejected = 1;
    double least_risk = INFINITY;
    for (Py_ssize_t i = 0; i < count; i++) {
        Candidate *c = &candidates[i];
        double erfc = poly[i] * t_values[i];
        if (c->risk < 0) erfc = 2.0 - erfc;
        double risk = erfc * 0.5;
        if (c->allocatable <= 0 || !c->known) risk = 1.0;
        if (isnan(risk)) goto decline;
        c->risk = risk;
        if (c->known) {
            any_known = 1;
            if (!(risk > threshold)) all_known_rejected = 0;
            if (risk < least_risk) least_risk = risk;
        }
    }
    int keep_least = keep_least_risky && any_known && all_known_rejected;

    /* Pass 3: explain_filter's names and messages, score_array's scores for the passed. */
    /* The message's constant parts (explain_filter's head, threshold and pod), written once. */
    static const char head[] = "GuardGrid: predicted OOM risk ";
    char over[64], pod_part[96], number[48], message[512]; /* parts at most 30+40+64+10+44+96+44+1 */
    if (!isfinite(threshold) || threshold < 0 || !isfinite(peak)) goto decline;
    int over_length = snprintf(over, sizeof over, " > %.2f (", threshold);
    char pod_size[48];
    if (format_bytes(pod_size, peak) < 0) goto decline;
    int pod_length = snprintf(pod_part, sizeof pod_part, " + pod %s of ", pod_size);
    if (over_length < 0 || over_length >= (int)sizeof over || pod_length < 0 || pod_length >= (int)sizeof pod_part) {
        goto decline;
    }
    passed = PyList_New(0);
    failed = PyDict_New();
    scores = PyList_New(0);
    if (passed == NULL || failed == NULL || scores == NULL) goto done;
    double score_threshold = threshold >= 1e-9 ? threshold : 1e-9; /* max(threshold, 1e-9) */
    double weights = weight_risk + weight_balance;
    weights += weight_fault;
    for (Py_ssize_t i = 0; i < count; i++) {
        Candidate *c = &candidates[i];
        PyObject *name = PyList_GET_ITEM(names, i);
        int rejected = c->risk > threshold || !c->known;
        if (keep_least && c->known && c->risk <= least_risk) rejected = 0;
        if (rejected) {
            PyObject *text;
            if (!c->known) {
                text = Py_NewRef(unknown_message);
            } else {
                double used = c->base + c->inflight;
                if (!isfinite(used) || !isfinite(c->allocatable)) goto decline;
                char *at = append(message, head, sizeof head - 1);
                int length = write_fixed(number, c->risk, 2);
                if (length < 0 || length > 40) goto decline;
                at = append(at, number, (size_t)length);
                at = append(at, over, (size_t)over_length);
                at = c->covered ? append(at, "forecast ", 9) : append(at, "requested ", 10);
                if ((length = format_bytes(number, used)) < 0) goto decline;
                at = append(at, number, (size_t)length);
                at = append(at, pod_part, (size_t)pod_length);
                if ((length = format_bytes(number, c->allocatable)) < 0) goto decline;
                at = append(at, number, (size_t)length);
                at = append(at, ")", 1);
                Py_ssize_t size = at - message;
                text = PyUnicode_New(size, 127);
                if (text == NULL) goto done;
                memcpy(PyUnicode_DATA(text), message, (size_t)size);
            }
            int stored = PyDict_SetItem(failed, name, text);
            Py_DECREF(text);
            if (stored < 0) goto done;
            continue;
        }
        if (PyList_Append(passed, name) < 0) goto done;
        /* score_array, element-wise. */
        double risk_term = 1.0 - np_minimum(c->risk / score_threshold, 1.0);
        double used = c->base + c->inflight;
        used += peak;
        double utilisation = c->allocatable > 0 ? used / c->allocatable : INFINITY;
        double balance_term = 1.0 - np_minimum(np_maximum(utilisation, 0.0), 1.0);
        double fault_term = 1.0 - np_minimum(c->fault_rate / fault_reference, 1.0);
        double combined = 0.0;
        if (weights > 0) {
            combined = risk_term * weight_risk;
            combined += balance_term * weight_balance;
            combined += fault_term * weight_fault;
            combined /= weights;
        }
        combined = np_minimum(np_maximum(combined, 0.0), 1.0);
        combined *= (double)(MAX_SCORE - 1);
        if (isnan(combined)) goto decline;
        long graded = (long)nearbyint(combined);
        if (c->own_slot > 0) graded = MAX_SCORE;
        if (graded < 0) graded = 0;
        if (graded > MAX_SCORE) graded = MAX_SCORE;
        PyObject *score = PyLong_FromLong(graded);
        if (score == NULL) goto done;
        int appended = PyList_Append(scores, score);
        Py_DECREF(score);
        if (appended < 0) goto done;
    }
    /* Rejections by reason, counted per distinct name as the metrics count them. */
    Py_ssize_t unknown = 0, position = 0;
    PyObject *key, *value;
    while (PyDict_Next(failed, &position, &key, &value)) {
        if (value == unknown_message) unknown++;
    }
    result = Py_BuildValue("(OOnO)", passed, failed, unknown, scores);
    goto done;

decline:
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(passed);
    Py_XDECREF(failed);
    Py_XDECREF(scores);
    Py_XDECREF(poly_array);
    PyMem_Free(t_values);
    PyMem_Free(candidates);
    return result;
}

static PyMethodDef kernel_methods[] = {
    {"filter", kernel_filter, METH_VARARGS, filter_doc},
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
    return PyModule_Create(&kernel_module);
}
